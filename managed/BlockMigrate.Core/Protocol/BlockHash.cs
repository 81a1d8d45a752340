using System.Security.Cryptography;

namespace BlockMigrate.Protocol;

/// <summary>
/// The hash of a block in the seed exchange: HMAC-SHA-256 under a key the receiver draws for each
/// migration (sent in its Welcome, inside the authenticated channel), cut to its first
/// <see cref="Size"/> bytes. Why keyed, and why 128 bits are enough then (docs/engine.md, "Seeding"): the
/// guest that writes the disk and whoever writes a seed file never see the key, so neither can craft a
/// block that collides with another under it, not even with a future attack on SHA-256's collision
/// resistance (that needs the key); without a key, 128 bits would fall to a birthday search of 2^64.
/// 16 bytes a block keep the exchange at 0.4 % of the disk with 4 KiB blocks.
/// One instance per thread (it reuses one HMAC context).
/// </summary>
public sealed class BlockHash : IDisposable
{
    public const int Size = 16;
    public const int KeyBytes = 32;

    private readonly IncrementalHash _hmac;
    private readonly byte[] _full = new byte[32];

    public BlockHash(ReadOnlySpan<byte> key)
    {
        if (key.Length != KeyBytes) throw new ArgumentException($"a block hash key is {KeyBytes} bytes", nameof(key));
        _hmac = IncrementalHash.CreateHMAC(HashAlgorithmName.SHA256, key);
    }

    /// <summary>The hash of <paramref name="block"/> into <paramref name="hash"/> (<see cref="Size"/> bytes).</summary>
    public void Compute(ReadOnlySpan<byte> block, Span<byte> hash)
    {
        _hmac.AppendData(block);
        _hmac.GetHashAndReset(_full);
        _full.AsSpan(0, Size).CopyTo(hash);
    }

    public Hash128 Compute(ReadOnlySpan<byte> block)
    {
        Span<byte> h = stackalloc byte[Size];
        Compute(block, h);
        return Hash128.Read(h);
    }

    /// <summary>A fresh random key (the receiver's, per migration).</summary>
    public static byte[] NewKey() => RandomNumberGenerator.GetBytes(KeyBytes);

    public void Dispose() => _hmac.Dispose();
}

/// <summary>A block hash as a dictionary key.</summary>
public readonly record struct Hash128(ulong A, ulong B)
{
    public static Hash128 Read(ReadOnlySpan<byte> b) =>
        new(System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(b), System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(b[8..]));

    public void Write(Span<byte> b)
    {
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(b, A);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(b[8..], B);
    }
}
