using BlockMigrate.Maps;
using BlockMigrate.Protocol;

namespace BlockMigrate.Engine;

/// <summary>
/// One seed-hashes frame of the source's first round (<see cref="SeedHashes"/>): its disk, its blocks and,
/// once the receiver answered (<see cref="SeedAnswer"/>, before the frame's ack), which of them it wrote
/// from its seeds. Those are acknowledged with the frame; the others are sent as data
/// (<see cref="Migration"/>'s seeded round). Built by <see cref="FrameProducer"/>; the answer is set by
/// <see cref="BlockSender"/> under its lock.
/// </summary>
internal sealed class SeedBatch(SourceDisk disk)
{
    private readonly List<BlockRange> _ranges = [];
    private readonly byte[] _hashes = new byte[SeedHashes.MaxHashes * BlockHash.Size];

    public SourceDisk Disk { get; } = disk;
    public int Count { get; private set; }
    public bool Full => Count == SeedHashes.MaxHashes;

    /// <summary>The frame's sequence number once sent (0 before).</summary>
    public ulong Sequence { get; set; }

    /// <summary>The receiver's answer (null until it came).</summary>
    public SeedAnswer? Answer { get; set; }

    /// <summary>Adds block <paramref name="block"/> (ascending) and returns where its hash goes.</summary>
    public Span<byte> Add(ulong block)
    {
        if (_ranges.Count > 0 && _ranges[^1].Last + 1 == block) _ranges[^1] = _ranges[^1] with { Last = block };
        else _ranges.Add(new BlockRange(block, block));
        return _hashes.AsSpan(Count++ * BlockHash.Size, BlockHash.Size);
    }

    public byte[] Encode() => new SeedHashes(Disk.Index, _ranges, _hashes.AsSpan(0, Count * BlockHash.Size).ToArray()).Encode();

    /// <summary>The blocks, in the frame's order.</summary>
    public IEnumerable<ulong> Blocks()
    {
        foreach (var r in _ranges)
            for (var b = r.First; ; b++)
            {
                yield return b;
                if (b == r.Last) break;
            }
    }

    /// <summary>The blocks the receiver wrote (<paramref name="supplied"/>) or did not.</summary>
    public IEnumerable<ulong> Answered(bool supplied)
    {
        var i = 0;
        foreach (var b in Blocks())
            if (Answer!.IsSupplied(i++) == supplied) yield return b;
    }
}
