using System.Runtime.InteropServices;

namespace BlockMigrate.Interop;

/// <summary>libzstd (Debian libzstd1, which dpkg itself depends on): one-shot compression of a data range.</summary>
internal static partial class NativeMethods
{
    private const string Zstd = "libzstd.so.1";

    [LibraryImport(Zstd, EntryPoint = "ZSTD_compressBound")]
    internal static partial nuint ZstdCompressBound(nuint srcSize);

    [LibraryImport(Zstd, EntryPoint = "ZSTD_createCCtx")]
    internal static partial nint ZstdCreateCCtx();

    [LibraryImport(Zstd, EntryPoint = "ZSTD_freeCCtx")]
    internal static partial nuint ZstdFreeCCtx(nint cctx);

    [LibraryImport(Zstd, EntryPoint = "ZSTD_compressCCtx")]
    internal static unsafe partial nuint ZstdCompressCCtx(nint cctx, byte* dst, nuint dstCapacity, byte* src, nuint srcSize, int level);

    [LibraryImport(Zstd, EntryPoint = "ZSTD_createDCtx")]
    internal static partial nint ZstdCreateDCtx();

    [LibraryImport(Zstd, EntryPoint = "ZSTD_freeDCtx")]
    internal static partial nuint ZstdFreeDCtx(nint dctx);

    [LibraryImport(Zstd, EntryPoint = "ZSTD_decompressDCtx")]
    internal static unsafe partial nuint ZstdDecompressDCtx(nint dctx, byte* dst, nuint dstCapacity, byte* src, nuint srcSize);

    [LibraryImport(Zstd, EntryPoint = "ZSTD_isError")]
    internal static partial uint ZstdIsError(nuint code);
}
