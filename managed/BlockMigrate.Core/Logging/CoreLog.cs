using Microsoft.Extensions.Logging;

namespace BlockMigrate.Logging;

/// <summary>
/// The engine's and the receiver's log lines, by level (Microsoft.Extensions.Logging's <see cref="ILogger"/>,
/// source-generated: no reflection, AOT-safe). The CLI routes them to NLog (Cli/Logging/NLogLogger.cs);
/// a library user passes any ILogger, or none (nothing is logged). Lines meant for the admin are
/// written whole by the caller (<see cref="Line"/>, <see cref="Warning"/>); the debug lines carry
/// their figures as fields.
/// </summary>
public static partial class CoreLog
{
    /// <summary>A notable event (phase change, round, throttle, connection), already worded.</summary>
    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "{Line}")]
    public static partial void Line(this ILogger logger, string line);

    /// <summary>Something the admin should look at; the run goes on.</summary>
    [LoggerMessage(EventId = 2, Level = LogLevel.Warning, Message = "{Line}")]
    public static partial void Warning(this ILogger logger, string line);

    /// <summary>A failure that is deliberately not acted on (best effort: cleanup, a progress sample).</summary>
    [LoggerMessage(EventId = 3, Level = LogLevel.Debug, Message = "{What} failed (ignored): {Reason}")]
    public static partial void Ignored(this ILogger logger, string what, string reason);

    /// <summary>A hypervisor adapter's line (<see cref="Hypervisors.IHypervisor.Log"/>), at the level it gave.</summary>
    [LoggerMessage(EventId = 5, Message = "{Hypervisor}: {Line}")]
    public static partial void HypervisorLine(this ILogger logger, LogLevel level, string hypervisor, string line);

    /// <summary>What one round of sending measured, and the rates after it.</summary>
    [LoggerMessage(EventId = 4, Level = LogLevel.Debug,
        Message = "round {Round} sent: {BlockBytes} bytes of blocks, {DataBytes} of data, {WireBytes} on the wire in {Milliseconds:0.0} ms " +
                  "(waited on the link {LinkWaitPercent:0}% of it); socket rate {WireRate:0} B/s, drain rate {BlockRate:0} B/s")]
    public static partial void RoundSent(this ILogger logger, int round, long blockBytes, long dataBytes, long wireBytes, double milliseconds,
        double linkWaitPercent, double wireRate, double blockRate);
}
