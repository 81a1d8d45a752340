using System.Runtime.InteropServices;

namespace BlockMigrate.Bench.Qemu;

/// <summary>
/// The physical limit of one run: the bytes no method can avoid sending, over the link rate.
/// Disk: the source image's data after the best compression BlockMigrate ships (zstd at
/// <see cref="ZstdLevel"/>, per 1 MiB chunk as the engine frames it; an all-zero chunk costs nothing,
/// as the engine sends zero runs as ranges; a chunk zstd cannot shrink costs its size). Memory: a dump
/// of the source guest's RAM (QMP <c>pmemsave</c>, taken before the migration starts) compressed the
/// same way (QEMU skips zero pages too). One copy of each: a lower bound that ignores whatever the
/// guest rewrites during the migration, so a run near 1.0× of it is as fast as the link allows.
/// </summary>
public static class PhysicalLimit
{
    /// <summary>The engine's zstd level (BlockMigrate.Protocol.ZstdCodec.Level, internal to Core).</summary>
    public const int ZstdLevel = 3;
    private const int Chunk = 1 << 20;

    public static long CompressedBytes(string path)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 20);
        var chunk = new byte[Chunk];
        var target = new byte[(int)ZSTD_compressBound(Chunk)];
        long total = 0;
        int n;
        while ((n = ReadFull(f, chunk)) > 0)
        {
            var data = chunk.AsSpan(0, n);
            if (!data.ContainsAnyExcept((byte)0))
                continue;
            var src = n == Chunk ? chunk : data.ToArray();
            var z = ZSTD_compress(target, (nuint)target.Length, src, (nuint)n, ZstdLevel);
            total += ZSTD_isError(z) != 0 ? n : Math.Min(n, (long)z);
        }
        return total;
    }

    /// <summary>Seconds for <paramref name="bytes"/> at <paramref name="bitsPerSecond"/>.</summary>
    public static double Seconds(long bytes, double bitsPerSecond) => bytes * 8 / bitsPerSecond;

    private static int ReadFull(Stream s, byte[] buffer)
    {
        var got = 0;
        while (got < buffer.Length)
        {
            var r = s.Read(buffer, got, buffer.Length - got);
            if (r == 0) break;
            got += r;
        }
        return got;
    }

    [DllImport("libzstd.so.1")]
    private static extern nuint ZSTD_compress(byte[] dst, nuint dstCapacity, byte[] src, nuint srcSize, int level);

    [DllImport("libzstd.so.1")]
    private static extern nuint ZSTD_compressBound(nuint srcSize);

    [DllImport("libzstd.so.1")]
    private static extern uint ZSTD_isError(nuint code);
}
