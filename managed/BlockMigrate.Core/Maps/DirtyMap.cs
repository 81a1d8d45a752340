using BlockMigrate.Interop;

namespace BlockMigrate.Maps;

/// <summary>
/// One disk's shared-memory dirty map, as the orchestrator sees it: the shim (nbdkit filter)
/// sets bits as the guest writes, and this side takes them (atomic exchange per 64-bit word),
/// gives back what could not be delivered, throttles, freezes and, on a destination, gates.
/// The layout and every rule of ordering live in libblockmigrate (dirtymap.h).
/// </summary>
public sealed class DirtyMap : IDisposable
{
    private readonly DirtyMapHandle _handle;

    private DirtyMap(DirtyMapHandle handle, string path)
    {
        _handle = handle;
        Path = path;
        var info = Info();
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

    public static DirtyMap Open(string path) => Wrap(NativeMethods.MapOpen(path), path);

    public static DirtyMap Create(string path, ulong imageSize, uint blockSize) =>
        Wrap(NativeMethods.MapCreate(path, imageSize, blockSize), path);

    public static DirtyMap OpenOrCreate(string path, ulong imageSize, uint blockSize) =>
        Wrap(NativeMethods.MapOpenOrCreate(path, imageSize, blockSize), path);

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
