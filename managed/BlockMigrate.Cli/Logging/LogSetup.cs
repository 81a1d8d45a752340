// Where log lines go and how they look.  Configured in code (no NLog.config, no XML reflection),
// so it is safe under NativeAOT trimming.  Three shapes, all on stderr (stdout stays for command
// output such as --json):
//   - under systemd, when stderr is the journal stream named by $JOURNAL_STREAM: "<N>message",
//     N the syslog priority, which journald strips and records as PRIORITY=; no timestamp
//     (journald stamps every line itself);
//   - on a terminal: "blockmigrate: warning: message", informational lines without a prefix;
//   - anything else (a pipe, a file): ISO timestamp, level, logger, message.
using NLog;
using NLog.Config;
using NLog.Layouts;
using NLog.Targets;

namespace BlockMigrate.Cli.Logging;

public enum LogStyle { Terminal, Journal, Plain }

public static class LogSetup
{
    /// <summary>Configures NLog for the process; call once, before the first log line.</summary>
    /// <param name="verbose">--verbose: debug and trace lines too</param>
    /// <param name="quiet">--quiet: warnings and errors only (wins over nothing; both set means verbose)</param>
    public static LogStyle Configure(bool verbose, bool quiet, LogStyle? style = null)
    {
        var chosen = style ?? Detect();
        var target = new ConsoleTarget("stderr")
        {
            StdErr = true,
            AutoFlush = true,
            Layout = Layout.FromMethod(e => Format(chosen, e), LayoutRenderOptions.ThreadAgnostic),
        };
        var config = new LoggingConfiguration();
        config.AddRule(MinimumLevel(verbose, quiet), LogLevel.Fatal, target);
        LogManager.Configuration = config;
        return chosen;
    }

    public static LogLevel MinimumLevel(bool verbose, bool quiet) =>
        verbose ? LogLevel.Trace : quiet ? LogLevel.Warn : LogLevel.Info;

    /// <summary>Journal when stderr is the stream systemd names in $JOURNAL_STREAM ("dev:inode").</summary>
    public static LogStyle Detect()
    {
        if (IsJournalStream(Environment.GetEnvironmentVariable("JOURNAL_STREAM"), StderrInode()))
            return LogStyle.Journal;
        return Console.IsErrorRedirected ? LogStyle.Plain : LogStyle.Terminal;
    }

    /// <summary>
    /// True when $JOURNAL_STREAM names the stderr socket.  Only the inode is compared: the device
    /// of a socket is the sockfs one, and /proc/self/fd/2 shows just "socket:[inode]".  A child
    /// whose stderr was redirected keeps the inherited variable but fails this check, as
    /// systemd.exec(5) asks.
    /// </summary>
    public static bool IsJournalStream(string? journalStream, ulong? stderrInode)
    {
        if (string.IsNullOrEmpty(journalStream) || stderrInode is null)
            return false;
        var colon = journalStream.IndexOf(':');
        return colon > 0 && ulong.TryParse(journalStream.AsSpan(colon + 1), out var inode) && inode == stderrInode;
    }

    /// <summary>Syslog priority for a level, as sd-daemon(3) prefixes expect.</summary>
    public static int SyslogPriority(LogLevel level) =>
        level == LogLevel.Fatal ? 2 :   // LOG_CRIT
        level == LogLevel.Error ? 3 :   // LOG_ERR
        level == LogLevel.Warn ? 4 :    // LOG_WARNING
        level == LogLevel.Info ? 6 :    // LOG_INFO
        7;                              // LOG_DEBUG (Debug, Trace)

    public static string Format(LogStyle style, LogEventInfo e)
    {
        var message = e.FormattedMessage;
        if (e.Exception is { } ex)
            message = style == LogStyle.Plain || e.Level <= LogLevel.Debug ? $"{message}: {ex}" : $"{message}: {ex.Message}";
        return style switch
        {
            // journald splits on newlines; keep one record per event
            LogStyle.Journal => $"<{SyslogPriority(e.Level)}>{message.Replace('\n', ' ')}",
            LogStyle.Terminal => e.Level >= LogLevel.Warn || e.Level <= LogLevel.Debug
                ? $"blockmigrate: {e.Level.Name.ToLowerInvariant()}: {message}"
                : message,
            _ => $"{e.TimeStamp.ToUniversalTime():yyyy-MM-ddTHH:mm:ss.fffZ} {e.Level.Name.ToUpperInvariant(),-5} {e.LoggerName}: {message}",
        };
    }

    private static ulong? StderrInode()
    {
        try
        {
            // "socket:[12345]" for a socket; Linux only, and only what we need to compare
            var target = new FileInfo("/proc/self/fd/2").LinkTarget;
            if (target is null || !target.StartsWith("socket:[", StringComparison.Ordinal) || !target.EndsWith(']'))
                return null;
            return ulong.TryParse(target.AsSpan(8, target.Length - 9), out var inode) ? inode : null;
        }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }
}
