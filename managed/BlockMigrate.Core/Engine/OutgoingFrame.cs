using BlockMigrate.Protocol;

namespace BlockMigrate.Engine;

/// <summary>
/// A data frame ready to send: its head, its body (rented from the pool when <see cref="Rented"/> is set)
/// and the whole blocks it delivers, so their outstanding bits can be dropped when it is acknowledged.
/// </summary>
internal sealed record OutgoingFrame(
    DataHeader Header,
    ReadOnlyMemory<byte> Body,
    byte[]? Rented,
    SourceDisk Disk,
    ulong FirstBlock,
    ulong Blocks)
{
    /// <summary>Set for a seed-hashes frame (its encoded payload is <see cref="Body"/>; no data header; no blocks until answered).</summary>
    public SeedBatch? Seeds { get; init; }

    public int WireBytes => FrameFormat.HeaderSize + (Seeds == null ? DataHeader.Size : 0) + Body.Length;
}
