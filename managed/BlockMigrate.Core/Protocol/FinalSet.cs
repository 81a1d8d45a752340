using System.Buffers.Binary;
using BlockMigrate.Maps;

namespace BlockMigrate.Protocol;

/// <summary>
/// A final-set frame: the blocks of one disk still stale at the freeze, sent before their data so
/// the destination gate knows exactly which blocks to hold. Payload, little-endian: u16 disk,
/// u16 0, u32 number of ranges, then per range u64 first block and u64 block count. A large set is
/// cut into several frames; <see cref="MaxRanges"/> ranges each. Ranges are non-empty, in ascending
/// order and disjoint, within a frame and across the frames of a disk (the source sends
/// <see cref="BlockRange.FromBits"/> in order): the receiver refuses anything else, so applying a final
/// set costs at most one pass over the disk's bitmap, however the ranges are chosen.
/// </summary>
public sealed record FinalSet(ushort Disk, IReadOnlyList<BlockRange> Ranges)
{
    public const int MaxRanges = (FrameFormat.MaxPayload - 8) / 16;

    public byte[] Encode()
    {
        if (Ranges.Any(r => r.Last < r.First || r.Count == 0))
            throw new ArgumentException("a final set holds non-empty ranges of fewer than 2^64 blocks");
        var b = new byte[8 + 16 * Ranges.Count];
        BinaryPrimitives.WriteUInt16LittleEndian(b, Disk);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), (uint)Ranges.Count);
        for (var i = 0; i < Ranges.Count; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8 + 16 * i), Ranges[i].First);
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16 + 16 * i), Ranges[i].Count);
        }
        return b;
    }

    public static FinalSet Decode(ReadOnlySpan<byte> p)
    {
        if (p.Length < 8) throw new ProtocolException("final-set frame too short");
        var n = BinaryPrimitives.ReadUInt32LittleEndian(p[4..]);
        if ((ulong)p.Length != 8 + 16ul * n) throw new ProtocolException("final-set frame length does not match its range count");
        var ranges = new List<BlockRange>((int)n);
        for (var i = 0; i < n; i++)
        {
            var first = BinaryPrimitives.ReadUInt64LittleEndian(p[(8 + 16 * i)..]);
            var count = BinaryPrimitives.ReadUInt64LittleEndian(p[(16 + 16 * i)..]);
            // the range's last block first + count - 1 must not wrap (a range ending at block 2^64-1 is whole)
            if (count == 0 || count - 1 > ulong.MaxValue - first) throw new ProtocolException("final-set frame with an empty or wrapping range");
            if (i > 0 && first <= ranges[i - 1].Last) throw new ProtocolException("final-set frame with ranges out of order or overlapping");
            ranges.Add(new BlockRange(first, first + count - 1));
        }
        return new FinalSet(BinaryPrimitives.ReadUInt16LittleEndian(p), ranges);
    }
}
