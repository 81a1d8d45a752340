using System.Buffers.Binary;
using System.Security.Cryptography;
using BlockMigrate.Engine;
using Microsoft.Win32.SafeHandles;

namespace BlockMigrate.Verify;

/// <summary>
/// A digest of an image's content whose cost follows its data, not its size: SHA-256 over, for each
/// 4 KiB unit (the last may be short) holding a non-zero byte, its offset (u64 little-endian) and its
/// bytes, then the image's size (u64 little-endian). Units lying wholly in a hole of the file
/// (SEEK_DATA/SEEK_HOLE, <see cref="ImageExtents.DataExtents"/>) read as zeros and are not read; units
/// of data extents are read and the all-zero ones skipped just the same. So two images have the same
/// digest exactly when their contents are equal (up to SHA-256), whatever their extent maps: a hole on
/// one side and written zeros on the other are equal, and a non-zero byte where the other side has a
/// hole is a difference (its unit is hashed on one side only).
/// </summary>
public static class NonzeroDigest
{
    public const int Unit = 4096;

    /// <summary>The digest (lowercase hex) of the first <paramref name="size"/> bytes, and the bytes read to make it.</summary>
    public static (string Hex, long BytesRead) Compute(SafeFileHandle image, long size)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        Span<byte> offset = stackalloc byte[8];
        long done = 0, read = 0; // units before `done` are hashed (or known zero)
        foreach (var (start, end) in ImageExtents.DataExtents(image, size))
        {
            var from = Math.Max(done, start / Unit * Unit);
            var to = Math.Min(size, (end + Unit - 1) / Unit * Unit);
            for (var pos = from; pos < to;)
            {
                var want = (int)Math.Min(buffer.Length, to - pos);
                var got = 0;
                while (got < want)
                {
                    var n = RandomAccess.Read(image, buffer.AsSpan(got, want - got), pos + got);
                    if (n == 0) throw new IOException($"the image ended at {pos + got} bytes, before its size {size}");
                    got += n;
                }
                read += got;
                for (var u = 0; u < got; u += Unit)
                {
                    var unit = buffer.AsSpan(u, Math.Min(Unit, got - u));
                    if (unit.IndexOfAnyExcept((byte)0) < 0) continue;
                    BinaryPrimitives.WriteInt64LittleEndian(offset, pos + u);
                    sha.AppendData(offset);
                    sha.AppendData(unit);
                }
                pos += got;
            }
            done = Math.Max(done, to);
        }
        BinaryPrimitives.WriteInt64LittleEndian(offset, size);
        sha.AppendData(offset);
        return (Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant(), read);
    }
}
