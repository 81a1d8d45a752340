using K4os.Compression.LZ4;

namespace BlockMigrate.Protocol;

/// <summary>
/// Adaptive compression of a data range: LZ4 (fast level) when it saves at least an eighth,
/// raw otherwise. LZ4 was chosen over zstd for speed on a loaded 2-core host (docs/BENCHMARKS.md).
/// </summary>
public static class BlockCodec
{
    /// <summary>Compresses <paramref name="data"/> into <paramref name="scratch"/>; returns the encoding and the bytes to send.</summary>
    public static (DataEncoding Encoding, ReadOnlyMemory<byte> Body) Encode(ReadOnlyMemory<byte> data, byte[] scratch, bool compress)
    {
        if (!compress) return (DataEncoding.Raw, data);
        var n = LZ4Codec.Encode(data.Span, scratch, LZ4Level.L00_FAST);
        if (n <= 0 || n > data.Length - data.Length / 8) return (DataEncoding.Raw, data);
        return (DataEncoding.Lz4, scratch.AsMemory(0, n));
    }

    public static int ScratchSize(int length) => Math.Max(length, LZ4Codec.MaximumOutputSize(length));

    /// <summary>Decodes an LZ4 body into exactly <paramref name="target"/>.Length bytes.</summary>
    public static void Decode(ReadOnlySpan<byte> body, Span<byte> target)
    {
        var n = LZ4Codec.Decode(body, target);
        if (n != target.Length) throw new ProtocolException($"LZ4 body decodes to {n} bytes, expected {target.Length}");
    }
}
