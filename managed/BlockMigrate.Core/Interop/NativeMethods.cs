using System.Runtime.InteropServices;

namespace BlockMigrate.Interop;

/// <summary>
/// Every P/Invoke of BlockMigrate, bound to libblockmigrate.so (native/include/blockmigrate/dirtymap.h);
/// libc in NativeMethods.LibC.cs, libzstd in NativeMethods.Zstd.cs. Nothing else in the tree declares a native import.
/// </summary>
internal static partial class NativeMethods
{
    private const string Lib = "blockmigrate";

    [LibraryImport(Lib, EntryPoint = "bm_map_create", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial DirtyMapHandle MapCreate(string path, ulong imageSize, uint blockSize);

    [LibraryImport(Lib, EntryPoint = "bm_map_open", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial DirtyMapHandle MapOpen(string path);

    [LibraryImport(Lib, EntryPoint = "bm_map_open_or_create", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial DirtyMapHandle MapOpenOrCreate(string path, ulong imageSize, uint blockSize);

    [LibraryImport(Lib, EntryPoint = "bm_map_open_fd", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial DirtyMapHandle MapOpenFd(int fd, string label);

    [LibraryImport(Lib, EntryPoint = "bm_map_create_at", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial DirtyMapHandle MapCreateAt(int dirfd, string name, string label, ulong imageSize, uint blockSize);

    [LibraryImport(Lib, EntryPoint = "bm_trusted_owner")]
    internal static partial int TrustedOwner(uint uid);

    [LibraryImport(Lib, EntryPoint = "bm_map_close")]
    internal static partial void MapClose(IntPtr map);

    [LibraryImport(Lib, EntryPoint = "bm_last_error")]
    internal static partial IntPtr LastError();

    [LibraryImport(Lib, EntryPoint = "bm_valid_block_size")]
    internal static partial int ValidBlockSize(ulong blockSize);

    [LibraryImport(Lib, EntryPoint = "bm_map_info")]
    internal static partial int MapInfo(DirtyMapHandle map, out BmInfo info);

    [LibraryImport(Lib, EntryPoint = "bm_map_counters")]
    internal static partial int MapCounters(DirtyMapHandle map, out BmInfo info);

    [LibraryImport(Lib, EntryPoint = "bm_dirty_count")]
    internal static partial long DirtyCount(DirtyMapHandle map);

    [LibraryImport(Lib, EntryPoint = "bm_peek")]
    internal static unsafe partial int Peek(DirtyMapHandle map, ulong firstWord, ulong nwords, ulong* output);

    [LibraryImport(Lib, EntryPoint = "bm_take")]
    internal static unsafe partial long Take(DirtyMapHandle map, ulong firstWord, ulong nwords, ulong* output);

    [LibraryImport(Lib, EntryPoint = "bm_mark_words")]
    internal static unsafe partial int MarkWords(DirtyMapHandle map, ulong firstWord, ulong nwords, ulong* bits);

    [LibraryImport(Lib, EntryPoint = "bm_mark_blocks")]
    internal static partial int MarkBlocks(DirtyMapHandle map, ulong firstBlock, ulong nblocks);

    [LibraryImport(Lib, EntryPoint = "bm_mark_bytes")]
    internal static partial int MarkBytes(DirtyMapHandle map, ulong offset, ulong count);

    [LibraryImport(Lib, EntryPoint = "bm_set_throttle")]
    internal static partial int SetThrottle(DirtyMapHandle map, ulong bytesPerSecond);

    [LibraryImport(Lib, EntryPoint = "bm_freeze")]
    internal static partial int Freeze(DirtyMapHandle map, int timeoutMs);

    [LibraryImport(Lib, EntryPoint = "bm_thaw")]
    internal static partial int Thaw(DirtyMapHandle map);

    [LibraryImport(Lib, EntryPoint = "bm_set_state_flags")]
    internal static partial int SetStateFlags(DirtyMapHandle map, uint set, uint clear);

    [LibraryImport(Lib, EntryPoint = "bm_set_owner")]
    internal static partial int SetOwner(DirtyMapHandle map, ulong pid);

    [LibraryImport(Lib, EntryPoint = "bm_get_cookie")]
    internal static unsafe partial int GetCookie(DirtyMapHandle map, byte* output);

    [LibraryImport(Lib, EntryPoint = "bm_set_cookie")]
    internal static unsafe partial int SetCookie(DirtyMapHandle map, byte* cookie);

    [LibraryImport(Lib, EntryPoint = "bm_gate_mark_words")]
    internal static unsafe partial int GateMarkWords(DirtyMapHandle map, ulong firstWord, ulong nwords, ulong* bits);

    [LibraryImport(Lib, EntryPoint = "bm_gate_peek")]
    internal static unsafe partial int GatePeek(DirtyMapHandle map, ulong firstWord, ulong nwords, ulong* output);

    [LibraryImport(Lib, EntryPoint = "bm_gate_clear_blocks")]
    internal static partial int GateClearBlocks(DirtyMapHandle map, ulong firstBlock, ulong nblocks);

    [LibraryImport(Lib, EntryPoint = "bm_info_size")]
    internal static partial nuint InfoSize();

    [LibraryImport(Lib, EntryPoint = "bm_info_offset", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial long InfoOffset(string field);

    /// <summary>The thread-local message of the last failed call, on this thread.</summary>
    internal static string LastErrorMessage()
    {
        var p = LastError();
        return p == IntPtr.Zero ? "unknown error" : Marshal.PtrToStringUTF8(p) ?? "unknown error";
    }
}
