namespace BlockMigrate.Cli.Status;

/// <summary>
/// What a running <c>blockmigrate migrate</c> publishes about itself for <c>blockmigrate status</c>: one
/// small JSON file per process (see <see cref="StatusDirectory"/>), rewritten a couple of times a second.
/// </summary>
public sealed record MigrationStatus
{
    public int Pid { get; init; }
    /// <summary>The process's start time in clock ticks since boot (/proc/PID/stat field 22): tells a reused PID apart.</summary>
    public ulong? PidStartTicks { get; init; }
    /// <summary>connecting, bulkcopy, dirtyrounds, switchover, verifying, network, draining, done, aborting.</summary>
    public string Phase { get; init; } = "connecting";
    public string To { get; init; } = "";
    public IReadOnlyList<string> Disks { get; init; } = [];
    public string Hypervisor { get; init; } = "none";
    public int Round { get; init; }
    public long RoundBytesDone { get; init; }
    public long RoundBytesTotal { get; init; }
    /// <summary>Of the current round (bulk copy or dirty round); null when not copying.</summary>
    public double? Percent { get; init; }
    public double WireBytesPerSecond { get; init; }
    public ulong DirtyBlocks { get; init; }
    public ulong DirtyBytes { get; init; }
    /// <summary>Blocks written at the destination from its seed images so far (0 without seeds).</summary>
    public long BlocksFromSeeds { get; init; }
    /// <summary>Blocks sent as data so far.</summary>
    public long BlocksSent { get; init; }
    /// <summary>The shim's write throttle, bytes/s; 0 = off.</summary>
    public ulong ThrottleBytesPerSecond { get; init; }
    public double? EtaSeconds { get; init; }
    public double ElapsedSeconds { get; init; }
    /// <summary>The return trip: blocks the receiver kept from its return base; 0 otherwise.</summary>
    public ulong ReturnBaseBlocks { get; init; }
    /// <summary>The network redirection step, e.g. "tunnel up, waiting for 2 connections to drain"; null without redirection.</summary>
    public string? Network { get; init; }
    public DateTimeOffset StartedAt { get; init; }
    public DateTimeOffset UpdatedAt { get; init; }
}
