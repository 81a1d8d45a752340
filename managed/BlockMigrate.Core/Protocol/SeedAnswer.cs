using System.Buffers.Binary;

namespace BlockMigrate.Protocol;

/// <summary>
/// The receiver's answer to one <see cref="SeedHashes"/> frame, sent before that frame's ack: which of its
/// blocks the receiver wrote from a seed (after hashing the bytes it read and finding the hash asked for).
/// Those are acknowledged with the frame, like data; the others the source sends as data. Payload,
/// little-endian: u64 sequence number of the seed-hashes frame answered, u32 number of hashes in it, u32 0,
/// then a bitmap of that many bits (bit i of byte i/8: block i of the frame was supplied), unused bits 0.
/// Answers come in the order of the frames they answer (the source checks the sequence number).
/// </summary>
public sealed record SeedAnswer(ulong Sequence, int Count, byte[] Supplied)
{
    public const int HeadSize = 16;

    public bool IsSupplied(int i) => (Supplied[i >> 3] & (1 << (i & 7))) != 0;

    public int SuppliedCount()
    {
        var n = 0;
        foreach (var b in Supplied) n += System.Numerics.BitOperations.PopCount(b);
        return n;
    }

    public static byte[] Bitmap(IReadOnlyList<bool> supplied)
    {
        var b = new byte[(supplied.Count + 7) / 8];
        for (var i = 0; i < supplied.Count; i++)
            if (supplied[i]) b[i >> 3] |= (byte)(1 << (i & 7));
        return b;
    }

    public byte[] Encode()
    {
        if (Count is < 1 or > SeedHashes.MaxHashes || Supplied.Length != (Count + 7) / 8) throw new ArgumentException("a seed answer's bitmap has one bit per hash");
        var b = new byte[HeadSize + Supplied.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(b, Sequence);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), (uint)Count);
        Supplied.CopyTo(b.AsSpan(HeadSize));
        return b;
    }

    public static SeedAnswer Decode(ReadOnlySpan<byte> p)
    {
        if (p.Length < HeadSize) throw new ProtocolException("seed-answer frame too short");
        var count = BinaryPrimitives.ReadUInt32LittleEndian(p[8..]);
        if (BinaryPrimitives.ReadUInt32LittleEndian(p[12..]) != 0) throw new ProtocolException("seed-answer frame with reserved bytes set");
        if (count is 0 or > SeedHashes.MaxHashes) throw new ProtocolException($"seed-answer frame for {count} hashes (1 to {SeedHashes.MaxHashes})");
        if (p.Length != HeadSize + (count + 7) / 8) throw new ProtocolException("seed-answer frame length does not match its hash count");
        var bits = p[HeadSize..].ToArray();
        if (count % 8 != 0 && (bits[^1] >> (int)(count % 8)) != 0)
            throw new ProtocolException("seed-answer frame claims blocks past the hashes it answers");
        return new SeedAnswer(BinaryPrimitives.ReadUInt64LittleEndian(p), (int)count, bits);
    }
}
