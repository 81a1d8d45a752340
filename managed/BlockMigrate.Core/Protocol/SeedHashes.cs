using System.Buffers.Binary;
using BlockMigrate.Maps;

namespace BlockMigrate.Protocol;

/// <summary>
/// A seed-hashes frame: blocks of one disk the source is about to send in its first round, each with its
/// <see cref="BlockHash"/>, so the receiver may write them from its seeds instead. Payload, little-endian:
/// u16 disk, u16 0, u32 number of ranges, u32 number of hashes, u32 0, then per range u64 first block and
/// u64 block count, then the hashes (<see cref="BlockHash.Size"/> bytes each, one per block of the
/// ranges, in order). Ranges are non-empty, ascending and disjoint, within a frame and (checked by the
/// receiver) across the frames of a disk; their blocks add up to the number of hashes, at most
/// <see cref="MaxHashes"/>. Every block is a whole block of the disk (the image's short last block is
/// never hashed). The receiver answers each such frame with a <see cref="SeedAnswer"/> before its ack.
/// </summary>
public sealed record SeedHashes(ushort Disk, IReadOnlyList<BlockRange> Ranges, byte[] Hashes)
{
    public const int HeadSize = 16;
    /// <summary>Hashes in one frame, at most: 128 KiB of hashes (32 MiB of disk at 4 KiB blocks).</summary>
    public const int MaxHashes = 8192;

    public int Count => Hashes.Length / BlockHash.Size;

    /// <summary>The hash of the <paramref name="i"/>th block of the frame.</summary>
    public ReadOnlySpan<byte> Hash(int i) => Hashes.AsSpan(i * BlockHash.Size, BlockHash.Size);

    /// <summary>The frame's blocks, in order.</summary>
    public IEnumerable<ulong> Blocks()
    {
        foreach (var r in Ranges)
            for (var b = r.First; ; b++)
            {
                yield return b;
                if (b == r.Last) break;
            }
    }

    public byte[] Encode()
    {
        var total = 0ul;
        foreach (var r in Ranges)
        {
            if (r.Last < r.First) throw new ArgumentException("a seed-hashes frame holds non-empty ranges");
            total += r.Count;
        }
        if (Hashes.Length % BlockHash.Size != 0 || total != (ulong)Count || Count > MaxHashes)
            throw new ArgumentException("a seed-hashes frame holds one hash per block, at most MaxHashes");
        var b = new byte[HeadSize + 16 * Ranges.Count + Hashes.Length];
        BinaryPrimitives.WriteUInt16LittleEndian(b, Disk);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), (uint)Ranges.Count);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), (uint)Count);
        for (var i = 0; i < Ranges.Count; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(HeadSize + 16 * i), Ranges[i].First);
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(HeadSize + 8 + 16 * i), Ranges[i].Count);
        }
        Hashes.CopyTo(b.AsSpan(HeadSize + 16 * Ranges.Count));
        return b;
    }

    /// <summary>Decodes and checks everything that does not need the disk (its size is checked by the receiver).</summary>
    public static SeedHashes Decode(ReadOnlySpan<byte> p)
    {
        if (p.Length < HeadSize) throw new ProtocolException("seed-hashes frame too short");
        if (BinaryPrimitives.ReadUInt16LittleEndian(p[2..]) != 0 || BinaryPrimitives.ReadUInt32LittleEndian(p[12..]) != 0)
            throw new ProtocolException("seed-hashes frame with reserved bytes set");
        var ranges = BinaryPrimitives.ReadUInt32LittleEndian(p[4..]);
        var hashes = BinaryPrimitives.ReadUInt32LittleEndian(p[8..]);
        if (hashes is 0 or > MaxHashes) throw new ProtocolException($"seed-hashes frame of {hashes} hashes (1 to {MaxHashes})");
        if (ranges == 0 || ranges > hashes) throw new ProtocolException($"seed-hashes frame of {ranges} ranges for {hashes} hashes");
        if ((ulong)p.Length != HeadSize + 16ul * ranges + (ulong)BlockHash.Size * hashes)
            throw new ProtocolException("seed-hashes frame length does not match its range and hash counts");
        var list = new List<BlockRange>((int)ranges);
        ulong total = 0;
        for (var i = 0; i < ranges; i++)
        {
            var first = BinaryPrimitives.ReadUInt64LittleEndian(p[(HeadSize + 16 * i)..]);
            var count = BinaryPrimitives.ReadUInt64LittleEndian(p[(HeadSize + 8 + 16 * i)..]);
            if (count == 0 || count > hashes || count - 1 > ulong.MaxValue - first) throw new ProtocolException("seed-hashes frame with an empty, oversized or wrapping range");
            if (i > 0 && first <= list[i - 1].Last) throw new ProtocolException("seed-hashes frame with ranges out of order or overlapping");
            total += count;
            if (total > hashes) break;
            list.Add(new BlockRange(first, first + count - 1));
        }
        if (total != hashes) throw new ProtocolException($"seed-hashes frame whose ranges hold {total} blocks for {hashes} hashes");
        return new SeedHashes(BinaryPrimitives.ReadUInt16LittleEndian(p), list, p[(int)(HeadSize + 16 * ranges)..].ToArray());
    }
}
