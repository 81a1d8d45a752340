using Microsoft.Extensions.Logging;

namespace BlockMigrate.Network;

/// <summary>
/// The redirectors' log lines (Microsoft.Extensions.Logging, source-generated: AOT-safe), the same
/// style as the engine's (BlockMigrate.Logging.CoreLog). The CLI hands each redirector a logger named
/// as before ("BlockMigrate.Network.Tunnel", "BlockMigrate.Network.Dns") and routes it to NLog.
/// </summary>
internal static partial class NetworkLog
{
    [LoggerMessage(EventId = 100, Level = LogLevel.Error, Message = "{Step}: {Reason}")]
    public static partial void StepFailed(this ILogger logger, string step, string reason);

    [LoggerMessage(EventId = 101, Level = LogLevel.Information, Message = "DNS {Name}: TTL lowered from {Previous} to {Low}; caches hold the old TTL for up to {PreviousAgain} s more")]
    public static partial void DnsTtlLowered(this ILogger logger, string name, object previous, object low, object previousAgain);

    [LoggerMessage(EventId = 102, Level = LogLevel.Information, Message = "DNS {Name} now points at {Addresses} (TTL {Ttl})")]
    public static partial void DnsUpdated(this ILogger logger, string name, string addresses, object ttl);

    [LoggerMessage(EventId = 103, Level = LogLevel.Information, Message = "DNS {Name}: TTL restored after abort")]
    public static partial void DnsTtlRestored(this ILogger logger, string name);

    [LoggerMessage(EventId = 110, Level = LogLevel.Information, Message = "tunnel kind: {Kind} ({Why})")]
    public static partial void TunnelKindChosen(this ILogger logger, string kind, string why);

    [LoggerMessage(EventId = 111, Level = LogLevel.Information, Message = "tunnel {Link} ({Kind}) prepared: source {Source}, destination {Destination}, table {Table}")]
    public static partial void TunnelPrepared(this ILogger logger, string link, object kind, string source, string destination, object table);

    [LoggerMessage(EventId = 112, Level = LogLevel.Information, Message = "tunnel {Link} up: {OldAddress} now reaches the VM through {Destination}; {Live} live connection(s)")]
    public static partial void TunnelUp(this ILogger logger, string link, object oldAddress, string destination, string live);

    [LoggerMessage(EventId = 117, Level = LogLevel.Information, Message = "tunnel {Link} up: {OldAddress} now reaches the VM through {Destination}")]
    public static partial void TunnelSwitched(this ILogger logger, string link, object oldAddress, string destination);

    [LoggerMessage(EventId = 118, Level = LogLevel.Information, Message = "tunnel {Link}: {Live} live connection(s) to {OldAddress}")]
    public static partial void TunnelLiveConnections(this ILogger logger, string link, string live, object oldAddress);

    [LoggerMessage(EventId = 119, Level = LogLevel.Warning, Message = "{Which}: no shell for the switch at the freeze ({Error}); it will start ip instead")]
    public static partial void NoShell(this ILogger logger, string which, string? error);

    [LoggerMessage(EventId = 120, Level = LogLevel.Warning, Message = "{Which}: the open shell failed ({Error}); starting ip instead")]
    public static partial void ShellFailed(this ILogger logger, string which, string? error);

    [LoggerMessage(EventId = 113, Level = LogLevel.Information, Message = "tunnel {Link}: timeout {Timeout} passed with {Live} live connection(s)")]
    public static partial void TunnelTimedOut(this ILogger logger, string link, TimeSpan timeout, int live);

    [LoggerMessage(EventId = 114, Level = LogLevel.Information, Message = "tunnel {Link}: no connection to {OldAddress} left after {Seconds:0.0} s")]
    public static partial void TunnelDrained(this ILogger logger, string link, object oldAddress, double seconds);

    [LoggerMessage(EventId = 121, Level = LogLevel.Information, Message = "tunnel {Link}: not waiting for {Entry}: no packet for {Seconds} s (a handshake or close that no longer goes on)")]
    public static partial void TunnelStaleEntry(this ILogger logger, string link, string entry, double seconds);

    [LoggerMessage(EventId = 115, Level = LogLevel.Information, Message = "tunnel {Link} removed ({Reason}){Note}")]
    public static partial void TunnelRemoved(this ILogger logger, string link, object reason, string note);

    [LoggerMessage(EventId = 116, Level = LogLevel.Debug, Message = "{Which}: {Script}")]
    public static partial void Script(this ILogger logger, string which, string script);
}
