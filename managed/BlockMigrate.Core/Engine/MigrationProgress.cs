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
    /// <summary>The return trip: blocks the receiver kept from its return base (not sent); 0 otherwise.</summary>
    public ulong ReturnBaseBlocks { get; init; }
    /// <summary>Blocks taken from the maps to send so far (a block sent twice counts twice).</summary>
    public ulong BlocksSent { get; init; }
}
