namespace BlockMigrate.Engine;

/// <summary>A snapshot for a progress display: raised a few times a second and at every phase change.</summary>
public sealed record MigrationProgress(
    MigrationPhase Phase,
    int Round,
    long RoundBytesDone,
    long RoundBytesTotal,
    double WireBytesPerSecond,
    ulong DirtyBlocks,
    ulong DirtyBytes,
    ulong ThrottleBytesPerSecond,
    TimeSpan? Eta,
    TimeSpan Elapsed)
{
    /// <summary>Blocks the receiver wrote from its seeds so far (acknowledged).</summary>
    public long BlocksFromSeeds { get; init; }

    /// <summary>Blocks sent as data so far.</summary>
    public long BlocksSent { get; init; }

    /// <summary>The return trip: blocks the receiver kept from its return base (not sent); 0 otherwise.</summary>
    public ulong ReturnBaseBlocks { get; init; }
}
