using System.Text.Json;
using BlockMigrate.Engine;
using NLog;

namespace BlockMigrate.Cli.Status;

/// <summary>
/// The running migration's own status file, PID.json in <see cref="StatusDirectory"/>: rewritten on every
/// progress event (at most ~2 a second) and removed on Dispose. Writing never fails the migration: a
/// directory that cannot be written is logged at debug level and the file skipped.
/// </summary>
public sealed class StatusFile : IDisposable
{
    private static readonly Logger Log = LogManager.GetLogger("migrate");
    private readonly object _lock = new();  // guards _status and the writes
    private readonly string _path, _temp;
    private MigrationStatus _status;
    private bool _disposed;

    private StatusFile(string dir, MigrationStatus status)
    {
        _path = Path.Combine(dir, $"{status.Pid}.json");
        _temp = Path.Combine(dir, $".{status.Pid}.json.tmp");
        _status = status;
        Write();
    }

    /// <summary>Starts publishing; null when no status directory is writable.</summary>
    public static StatusFile? TryCreate(string to, IEnumerable<string> disks, string hypervisor)
    {
        var dir = StatusDirectory.ForWriting();
        if (dir is null)
        {
            Log.Debug("no writable status directory; 'blockmigrate status' will not see this migration");
            return null;
        }
        var now = DateTimeOffset.UtcNow;
        return new StatusFile(dir, new MigrationStatus
        {
            Pid = Environment.ProcessId, PidStartTicks = StatusDirectory.StartTicks(Environment.ProcessId), To = to, Disks = disks.ToList(), Hypervisor = hypervisor, StartedAt = now, UpdatedAt = now,
        });
    }

    public void OnProgress(MigrationProgress p) => Update(s => s with
    {
        Phase = p.Phase.ToString().ToLowerInvariant(),
        Round = p.Round,
        RoundBytesDone = p.RoundBytesDone,
        RoundBytesTotal = p.RoundBytesTotal,
        Percent = p.RoundBytesTotal > 0 && p.Phase is MigrationPhase.BulkCopy or MigrationPhase.DirtyRounds
            ? Math.Round(100.0 * Math.Min(p.RoundBytesDone, p.RoundBytesTotal) / p.RoundBytesTotal, 1) : null,
        WireBytesPerSecond = Math.Round(p.WireBytesPerSecond),
        DirtyBlocks = p.DirtyBlocks,
        DirtyBytes = p.DirtyBytes,
        ThrottleBytesPerSecond = p.ThrottleBytesPerSecond,
        EtaSeconds = p.Eta?.TotalSeconds is { } e ? Math.Round(e, 1) : null,
        ElapsedSeconds = Math.Round(p.Elapsed.TotalSeconds, 1),
    });

    /// <summary>The network redirection step (after the commit the phase becomes "network").</summary>
    public void OnNetwork(string phase, string? detail) => Update(s => s with { Phase = phase, Network = detail });

    private void Update(Func<MigrationStatus, MigrationStatus> change)
    {
        lock (_lock)
        {
            if (_disposed) return;
            _status = change(_status) with { UpdatedAt = DateTimeOffset.UtcNow };
            Write();
        }
    }

    private void Write()
    {
        try
        {
            File.WriteAllText(_temp, JsonSerializer.Serialize(_status, StatusJsonContext.Default.MigrationStatus));
            File.Move(_temp, _path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.Debug($"status file {_path}: {e.Message}");
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            StatusDirectory.TryDelete(_temp);
            StatusDirectory.TryDelete(_path);
        }
    }
}
