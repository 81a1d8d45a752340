using BlockMigrate.Files;
using BlockMigrate.Interop;

namespace BlockMigrate.Maps;

/// <summary>
/// One disk's shared-memory dirty map, as the orchestrator sees it: the shim (nbdkit filter)
/// sets bits as the guest writes, and this side takes them (atomic exchange per 64-bit word),
/// gives back what could not be delivered, throttles, freezes and, on a destination, gates.
/// The layout and every rule of ordering live in libblockmigrate (dirtymap.h).
/// <para>
/// Trust: the map's directory is opened here with O_DIRECTORY|O_NOFOLLOW and checked (owned by root, this
/// user or user blockmigrate; not writable by group or others), the map is opened in it with openat and
/// O_NOFOLLOW and checked (a regular file, one of those owners, mode 0600), and that very descriptor is
/// handed to the library, which checks it again, validates the header against the file's size and maps it.
/// Maps are created 0600 in a directory checked the same way. Every call then re-checks the file's size
/// (a map truncated under us gives a <see cref="DirtyMapException"/>, never SIGBUS).
/// </para>
/// </summary>
public sealed class DirtyMap : IDisposable
{
    private readonly DirtyMapHandle _handle;

    private DirtyMap(DirtyMapHandle handle, string path)
    {
        _handle = handle;
        Path = path;
        var info = Counters(); // the geometry: no pass over the bitmaps
        BlockSize = info.BlockSize;
        Blocks = info.Blocks;
        ImageSize = info.ImageSize;
    }

    public string Path { get; }
    public uint BlockSize { get; }
    public ulong Blocks { get; }
    public ulong ImageSize { get; }
    /// <summary>Number of 64-bit words of the bitmap.</summary>
    public ulong Words => (Blocks + 63) / 64;

    public static DirtyMap Open(string path)
    {
        using var dir = OpenDirectory(path, create: false, out var name);
        return OpenIn(dir, name, path) ?? throw new DirtyMapException($"dirty map {path}: No such file or directory");
    }

    public static DirtyMap Create(string path, ulong imageSize, uint blockSize)
    {
        using var dir = OpenDirectory(path, create: true, out var name);
        return Wrap(NativeMethods.MapCreateAt((int)dir.Handle.DangerousGetHandle(), name, path, imageSize, blockSize), path);
    }

    /// <summary>Opens the map when present and its geometry matches, creates it when absent, refuses otherwise.</summary>
    public static DirtyMap OpenOrCreate(string path, ulong imageSize, uint blockSize)
    {
        using var dir = OpenDirectory(path, create: true, out var name);
        for (var tries = 0; ; tries++)
        {
            var map = OpenIn(dir, name, path);
            if (map is null)
            {
                var created = NativeMethods.MapCreateAt((int)dir.Handle.DangerousGetHandle(), name, path, imageSize, blockSize);
                if (created.IsInvalid && System.Runtime.InteropServices.Marshal.GetLastSystemError() == 17 /* EEXIST: a racing creator won */ && tries < 3)
                {
                    created.Dispose();
                    continue;
                }
                return Wrap(created, path);
            }
            var blocks = imageSize / blockSize + (imageSize % blockSize != 0 ? 1UL : 0);
            if (map.BlockSize != blockSize || map.Blocks != blocks || map.ImageSize != imageSize)
            {
                map.Dispose();
                throw new DirtyMapException($"dirty map {path}: geometry mismatch: map has {map.Blocks} blocks of {map.BlockSize} bytes for {map.ImageSize} bytes, " +
                                            $"export needs {blocks} blocks of {blockSize} bytes for {imageSize} bytes");
            }
            return map;
        }
    }

    private static TrustedDirectory OpenDirectory(string path, bool create, out string name)
    {
        try
        {
            if (create && OperatingSystem.IsLinux() && System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path)) is { } parent && !Directory.Exists(parent))
                Directory.CreateDirectory(parent, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            return TrustedDirectory.OpenParent(path, serviceUser: true, out name);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            throw new DirtyMapException($"dirty map {path}: {e.Message}");
        }
    }

    /// <summary>The map <paramref name="name"/> of <paramref name="dir"/>, checked; null when absent.</summary>
    private static DirtyMap? OpenIn(TrustedDirectory dir, string name, string path)
    {
        Microsoft.Win32.SafeHandles.SafeFileHandle? fd;
        try
        {
            fd = dir.OpenFile(name, write: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DirtyMapException(e.Message.Contains(path, StringComparison.Ordinal) ? $"dirty map: {e.Message}" : $"dirty map {path}: {e.Message}");
        }
        if (fd is null) return null;
        // the library takes the descriptor (and closes it, on failure too)
        var raw = (int)fd.DangerousGetHandle();
        fd.SetHandleAsInvalid();
        return Wrap(NativeMethods.MapOpenFd(raw, path), path);
    }

    public static bool IsValidBlockSize(ulong blockSize) => NativeMethods.ValidBlockSize(blockSize) == 1;

    private static DirtyMap Wrap(DirtyMapHandle handle, string path)
    {
        if (handle.IsInvalid)
        {
            var message = NativeMethods.LastErrorMessage();
            handle.Dispose();
            throw new DirtyMapException(message);
        }
        return new DirtyMap(handle, path);
    }

    public DirtyMapInfo Info()
    {
        Check(NativeMethods.MapInfo(_handle, out var i));
        return new DirtyMapInfo(i.Version, i.BlockSize, i.ImageSize, i.Blocks, (MapState)i.State, i.ThrottleBps,
            i.Writes, i.BytesWritten, Nanoseconds(i.ThrottledNs), Nanoseconds(i.FrozenNs), Nanoseconds(i.GatedNs),
            i.Inflight, i.OwnerPid, i.DirtyBlocks, i.GatedBlocks);
    }

    /// <summary>
    /// <see cref="Info"/> without <see cref="DirtyMapInfo.DirtyBlocks"/> and <see cref="DirtyMapInfo.GatedBlocks"/>
    /// (both 0): the header's state, throttle and counters only, never a pass over the bitmaps (whose
    /// never-written pages a read would allocate: 32 MiB per TiB of disk at 4 KiB blocks).
    /// </summary>
    public DirtyMapInfo Counters()
    {
        Check(NativeMethods.MapCounters(_handle, out var i));
        return new DirtyMapInfo(i.Version, i.BlockSize, i.ImageSize, i.Blocks, (MapState)i.State, i.ThrottleBps,
            i.Writes, i.BytesWritten, Nanoseconds(i.ThrottledNs), Nanoseconds(i.FrozenNs), Nanoseconds(i.GatedNs),
            i.Inflight, i.OwnerPid, 0, 0);
    }

    public ulong DirtyCount()
    {
        var n = NativeMethods.DirtyCount(_handle);
        if (n < 0) throw new DirtyMapException(NativeMethods.LastErrorMessage());
        return (ulong)n;
    }

    /// <summary>Copies words of the dirty bitmap without clearing them.</summary>
    public unsafe void Peek(ulong firstWord, Span<ulong> destination)
    {
        fixed (ulong* p = destination)
            Check(NativeMethods.Peek(_handle, firstWord, (ulong)destination.Length, p));
    }

    /// <summary>
    /// Takes (reads and clears, atomically per word) <c>destination.Length</c> words starting at
    /// <paramref name="firstWord"/>. Returns the number of dirty blocks taken. Whatever is taken and
    /// not delivered must be given back with <see cref="MarkWords"/>.
    /// </summary>
    public unsafe ulong Take(ulong firstWord, Span<ulong> destination)
    {
        long n;
        fixed (ulong* p = destination)
            n = NativeMethods.Take(_handle, firstWord, (ulong)destination.Length, p);
        if (n < 0) throw new DirtyMapException(NativeMethods.LastErrorMessage());
        return (ulong)n;
    }

    /// <summary>Takes the whole bitmap and returns it.</summary>
    public ulong[] TakeAll(out ulong count)
    {
        var words = new ulong[Words];
        count = Take(0, words);
        return words;
    }

    /// <summary>Gives bits back (atomic OR): the blocks are dirty again.</summary>
    public unsafe void MarkWords(ulong firstWord, ReadOnlySpan<ulong> bits)
    {
        fixed (ulong* p = bits)
            Check(NativeMethods.MarkWords(_handle, firstWord, (ulong)bits.Length, p));
    }

    public void MarkBlocks(ulong firstBlock, ulong count) => Check(NativeMethods.MarkBlocks(_handle, firstBlock, count));

    public void MarkBytes(ulong offset, ulong count) => Check(NativeMethods.MarkBytes(_handle, offset, count));

    /// <summary>Limits the guest's writes to this many bytes per second; 0 removes the limit.</summary>
    public void SetThrottle(ulong bytesPerSecond) => Check(NativeMethods.SetThrottle(_handle, bytesPerSecond));

    /// <summary>
    /// Holds new writes and returns once the writes in flight have drained; on timeout the map
    /// is thawed again and this throws.
    /// </summary>
    public void Freeze(TimeSpan timeout) =>
        Check(NativeMethods.Freeze(_handle, timeout == Timeout.InfiniteTimeSpan ? -1 : (int)timeout.TotalMilliseconds));

    public void Thaw() => Check(NativeMethods.Thaw(_handle));

    public void SetState(MapState set, MapState clear = MapState.None) =>
        Check(NativeMethods.SetStateFlags(_handle, (uint)set, (uint)clear));

    public void SetOwner(ulong pid) => Check(NativeMethods.SetOwner(_handle, pid));

    public const int CookieSize = 32;

    /// <summary>The orchestrator's opaque identity of the migration this map belongs to.</summary>
    public unsafe byte[] GetCookie()
    {
        var cookie = new byte[CookieSize];
        fixed (byte* p = cookie)
            Check(NativeMethods.GetCookie(_handle, p));
        return cookie;
    }

    public unsafe void SetCookie(ReadOnlySpan<byte> cookie)
    {
        if (cookie.Length != CookieSize)
            throw new ArgumentException($"a map cookie is {CookieSize} bytes", nameof(cookie));
        fixed (byte* p = cookie)
            Check(NativeMethods.SetCookie(_handle, p));
    }

    /// <summary>Destination: these blocks are stale; I/O on them waits until they are released.</summary>
    public unsafe void GateMarkWords(ulong firstWord, ReadOnlySpan<ulong> bits)
    {
        fixed (ulong* p = bits)
            Check(NativeMethods.GateMarkWords(_handle, firstWord, (ulong)bits.Length, p));
    }

    /// <summary>Destination: copies words of the gate bitmap (the blocks still stale).</summary>
    public unsafe void GatePeek(ulong firstWord, Span<ulong> destination)
    {
        fixed (ulong* p = destination)
            Check(NativeMethods.GatePeek(_handle, firstWord, (ulong)destination.Length, p));
    }

    /// <summary>Destination: these blocks' data has landed; release requests waiting on them.</summary>
    public void GateRelease(ulong firstBlock, ulong count) => Check(NativeMethods.GateClearBlocks(_handle, firstBlock, count));

    /// <summary>The dirty blocks as inclusive ranges, without clearing them.</summary>
    public List<BlockRange> DirtyRanges()
    {
        var words = new ulong[Words];
        Peek(0, words);
        return BlockRange.FromBits(words);
    }

    public void Dispose() => _handle.Dispose();

    private static TimeSpan Nanoseconds(ulong ns) => TimeSpan.FromTicks((long)(ns / 100));

    private static void Check(int rc)
    {
        if (rc < 0) throw new DirtyMapException(NativeMethods.LastErrorMessage());
    }
}
