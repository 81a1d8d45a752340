using BlockMigrate.Engine;
using NLog;

namespace BlockMigrate.Cli.Commands;

/// <summary>
/// Live progress: one line rewritten in place on a terminal (stderr); the engine's log lines go through
/// NLog (journald priorities under systemd, timestamps in a pipe or file, --verbose/--quiet respected).
/// </summary>
public sealed class ProgressDisplay(bool tty)
{
    private static readonly Logger Log = LogManager.GetLogger("migrate");
    private readonly object _lock = new();
    private int _width;

    /// <summary>The engine's logger: its lines go to NLog ("migrate") at their level, with the progress line cleared first.</summary>
    public Microsoft.Extensions.Logging.ILogger Logger => _logger ??= new Logging.NLogLogger(Log, Write);
    private Microsoft.Extensions.Logging.ILogger? _logger;

    private void Write(LogLevel level, string line)
    {
        lock (_lock)
        {
            ClearLine();
            Log.Log(level, line);
        }
    }

    /// <summary>Shows <paramref name="text"/> as the progress line (terminal only).</summary>
    public void Show(string text)
    {
        if (!tty) return;
        lock (_lock)
        {
            Console.Error.Write("\r" + text.PadRight(_width));
            _width = text.Length;
        }
    }

    public void OnProgress(MigrationProgress p)
    {
        if (!tty) return;
        var pct = p.RoundBytesTotal > 0 ? $" {100.0 * Math.Min(p.RoundBytesDone, p.RoundBytesTotal) / p.RoundBytesTotal,5:0.0}%" : "";
        var phase = p.Phase switch
        {
            MigrationPhase.BulkCopy => "bulk copy" + pct,
            MigrationPhase.DirtyRounds => $"round {p.Round}" + pct,
            MigrationPhase.FinalBlocks => "final blocks" + pct,
            _ => p.Phase.ToString().ToLowerInvariant(),
        };
        var line = $"[{p.Elapsed:mm\\:ss}] {phase} | {Units.Bytes(p.WireBytesPerSecond)}/s | dirty {p.DirtyBlocks} blocks ({Units.Bytes(p.DirtyBytes)})" +
                   $" | ETA {(p.Eta is { } e ? $"{e.TotalSeconds:0}s" : "?")} | throttle {(p.ThrottleBytesPerSecond == 0 ? "off" : Units.Bytes(p.ThrottleBytesPerSecond) + "/s")}";
        lock (_lock)
        {
            Console.Error.Write("\r" + line.PadRight(_width));
            _width = line.Length;
        }
    }

    public void Finish()
    {
        lock (_lock) ClearLine();
    }

    private void ClearLine()
    {
        if (!tty || _width == 0) return;
        Console.Error.Write("\r" + new string(' ', _width) + "\r");
        _width = 0;
    }
}
