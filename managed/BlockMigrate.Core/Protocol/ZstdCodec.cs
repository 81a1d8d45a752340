using BlockMigrate.Interop;

namespace BlockMigrate.Protocol;

/// <summary>
/// zstd through libzstd, one context per thread (a context is reused across frames: creating one per
/// frame would cost more than compressing a 1 MiB chunk of zeros-and-code).
/// </summary>
internal static class ZstdCodec
{
    /// <summary>Level 3, zstd's default: on OS files 2.8× at ~250 MB/s per core here, against LZ4's 1.9× at ~650 MB/s.</summary>
    public const int Level = 3;

    [ThreadStatic] private static Context? _context;

    public static int Bound(int length) => (int)NativeMethods.ZstdCompressBound((nuint)length);

    /// <summary>Compresses into <paramref name="target"/>; returns the length, or -1 if it did not fit.</summary>
    public static unsafe int Compress(ReadOnlySpan<byte> source, Span<byte> target)
    {
        var c = _context ??= new Context();
        fixed (byte* s = source)
        fixed (byte* t = target)
        {
            var n = NativeMethods.ZstdCompressCCtx(c.Compressor, t, (nuint)target.Length, s, (nuint)source.Length, Level);
            return NativeMethods.ZstdIsError(n) != 0 ? -1 : (int)n;
        }
    }

    /// <summary>Decompresses into <paramref name="target"/>; returns the length, or -1 for a corrupt body.</summary>
    public static unsafe int Decompress(ReadOnlySpan<byte> source, Span<byte> target)
    {
        var c = _context ??= new Context();
        fixed (byte* s = source)
        fixed (byte* t = target)
        {
            var n = NativeMethods.ZstdDecompressDCtx(c.Decompressor, t, (nuint)target.Length, s, (nuint)source.Length);
            return NativeMethods.ZstdIsError(n) != 0 ? -1 : (int)n;
        }
    }

    /// <summary>A thread's contexts, freed when the thread's last reference goes.</summary>
    private sealed class Context
    {
        public readonly nint Compressor = NativeMethods.ZstdCreateCCtx();
        public readonly nint Decompressor = NativeMethods.ZstdCreateDCtx();

        ~Context()
        {
            NativeMethods.ZstdFreeCCtx(Compressor);
            NativeMethods.ZstdFreeDCtx(Decompressor);
        }
    }
}
