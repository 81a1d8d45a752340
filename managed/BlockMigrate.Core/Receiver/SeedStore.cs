using BlockMigrate.Files;
using BlockMigrate.Interop;
using BlockMigrate.Logging;
using BlockMigrate.Protocol;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace BlockMigrate.Receiver;

/// <summary>
/// The receiver's seeds for one migration: the seed images (<c>--seed FILE</c>, the files of
/// <c>seed-dir</c>) opened read-only, and an index from the keyed <see cref="BlockHash"/> of every
/// block-sized, block-aligned, non-zero chunk of them to where it lies, plus the blocks this migration
/// has written (<see cref="AddReceived"/>). Built per block size when a disk of that size first asks
/// (the key is this migration's, so the index is too).
/// <para>
/// Seed files are shared files and never trusted: a named seed is opened with O_NOFOLLOW (a symlink at
/// the name is refused, never followed), a seed directory is opened as a <see cref="TrustedDirectory"/>
/// (trusted owner, not writable by group or others) and its entries through its descriptor with
/// O_NOFOLLOW; only regular files are taken (O_NONBLOCK: a FIFO cannot hang the receiver). Their
/// contents may change at any time: <see cref="TryRead"/> reads the chunk and hashes the bytes it read;
/// only if that is the hash asked for are they written. A seed changed, truncated or unreadable costs
/// that block's data on the wire, never a wrong block.
/// </para>
/// </summary>
internal sealed class SeedStore : IDisposable
{
    /// <summary>A seed larger than this is refused (as an image is).</summary>
    public const long MaxSeedBytes = 1L << 50;

    /// <summary>More seed bytes than this draw a warning at start: indexing them may outlast a source's stall timeout.</summary>
    public const long LargeSeeds = 8L << 30;

    private readonly List<(SafeFileHandle File, string Name, bool Seed)> _files = [];
    private readonly Dictionary<uint, Dictionary<Hash128, (int File, long Offset)>> _indexes = [];
    private readonly byte[] _key;
    private readonly BlockHash _hash;
    private readonly ILogger _log;
    private Action? _indexed;

    private SeedStore(byte[] key, ILogger log)
    {
        _key = key;
        _hash = new BlockHash(key);
        _log = log;
    }

    /// <summary>This migration's key, for the Welcome (hex).</summary>
    public string KeyHex => Convert.ToHexString(_key).ToLowerInvariant();

    public byte[] Key => _key;

    public int SeedCount => _files.Count(f => f.Seed);

    /// <summary>Blocks written from seeds (or from blocks received earlier) in this migration.</summary>
    public long Supplied { get; set; }

    /// <summary>Blocks asked for whose chunk no longer hashed as indexed (changed since), or could not be read.</summary>
    public long Stale { get; set; }

    /// <summary>
    /// Checks every named seed and the seed directory at start-up (a bad one is an admin's error: one
    /// line, the receiver does not start). Warnings for entries of the directory that are skipped.
    /// </summary>
    public static void Check(ReceiverOptions options, ILogger log)
    {
        using var s = Open(options, log, strict: true);
        if (s == null) return;
        var total = s._files.Sum(f => RandomAccess.GetLength(f.File));
        log.Line($"seeds: {s.SeedCount} file{(s.SeedCount == 1 ? "" : "s")} ({string.Join(", ", s._files.Select(f => f.Name))}), {total / 1048576.0:0} MiB, indexed per migration");
        // a source waits for the first hashes' ack while the index is built: past its stall timeout (30 s) it gives up
        if (total > LargeSeeds)
            log.Warning($"seeds: {total / 1073741824.0:0.0} GiB of seeds are read and hashed at every migration (a few hundred MiB/s a core) before the first hashes are answered: " +
                        "a source gives up after 30 s without an acknowledgement: keep to the templates in use");
    }

    /// <summary>The seeds of one migration, or null when there are none (then no seed key, no exchange).</summary>
    public static SeedStore? Open(ReceiverOptions options, ILogger log, bool strict = false)
    {
        if (options.Seeds.Count == 0 && options.SeedDir == null) return null;
        var store = new SeedStore(BlockHash.NewKey(), log) { _indexed = options.SeedsIndexed };
        try
        {
            foreach (var path in options.Seeds)
            {
                try
                {
                    store._files.Add((OpenSeed(-100 /* AT_FDCWD */, path, path), path, true));
                }
                catch (IOException e)
                {
                    if (strict) throw new ReceiverException($"seed {path}: {e.Message}");
                    log.Warning($"seed {path} skipped: {e.Message}");
                }
            }
            if (options.SeedDir is { } dirPath)
            {
                TrustedDirectory dir;
                try
                {
                    dir = TrustedDirectory.Open(dirPath, serviceUser: true);
                }
                catch (IOException e)
                {
                    if (strict) throw new ReceiverException($"seed directory: {e.Message}");
                    log.Warning($"seed directory skipped: {e.Message}");
                    dir = null!;
                }
                if (dir != null)
                    using (dir)
                    {
                        List<string> names;
                        try
                        {
                            names = Directory.EnumerateFileSystemEntries(dirPath).Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal).ToList();
                        }
                        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                        {
                            if (strict) throw new ReceiverException($"seed directory {dirPath}: {e.Message}");
                            log.Warning($"seed directory {dirPath} skipped: {e.Message}");
                            names = [];
                        }
                        foreach (var name in names)
                        {
                            if (name.StartsWith('.')) continue;
                            try
                            {
                                store._files.Add((OpenSeed((int)dir.Handle.DangerousGetHandle(), name, dir.PathOf(name)), dir.PathOf(name), true));
                            }
                            catch (IOException e)
                            {
                                log.Warning($"seed {dir.PathOf(name)} skipped: {e.Message}");
                            }
                        }
                    }
            }
            if (store._files.Count == 0)
            {
                if (strict && options.SeedDir == null) throw new ReceiverException("no usable seed");
                store.Dispose();
                return null;
            }
            return store;
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    /// <summary>openat(dir, name, O_RDONLY|O_NOFOLLOW|O_NONBLOCK), a regular file of at most <see cref="MaxSeedBytes"/>.</summary>
    private static unsafe SafeFileHandle OpenSeed(int dirFd, string name, string shown)
    {
        int fd;
        fixed (byte* p = NativeMethods.Utf8z(name))
            fd = openat(dirFd, p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
        {
            var e = errno;
            if (e == ELOOP) throw new UntrustedFileException($"{shown} is a symbolic link; refusing to follow it (name the file itself)");
            throw new IOException($"{shown}: {NativeMethods.ErrnoText(e)}");
        }
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            var st = FileTrust.Stat(handle, shown);
            if (!S_ISREG(st.st_mode)) throw new UntrustedFileException($"{shown} is not a regular file; refusing it");
            if (st.st_size > MaxSeedBytes) throw new IOException($"{shown} is {st.st_size} bytes, more than a seed may be");
            return handle;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Registers an image of this migration as a place blocks may be copied from; returns its file number.</summary>
    public int AddImage(SafeFileHandle image, string name)
    {
        _files.Add((image, name, false));
        return _files.Count - 1;
    }

    /// <summary>The index for <paramref name="blockSize"/>, built on first use (reads and hashes every seed).</summary>
    private Dictionary<Hash128, (int File, long Offset)> Index(uint blockSize)
    {
        if (_indexes.TryGetValue(blockSize, out var index)) return index;
        index = [];
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        long read = 0, chunks = 0;
        var buffer = new byte[Math.Max(blockSize, 1u << 20)];
        var per = buffer.Length / (int)blockSize * (int)blockSize;
        for (var f = 0; f < _files.Count; f++)
        {
            if (!_files[f].Seed) continue;
            var file = _files[f].File;
            try
            {
                var length = RandomAccess.GetLength(file);
                var pos = 0L;
                while (pos + blockSize <= length)
                {
                    var data = SparseFile.NextData(file, pos, length);
                    data -= data % blockSize;
                    if (data + blockSize > length) break;
                    var hole = SparseFile.NextHole(file, data, length);
                    if (hole <= data) hole = length;
                    // whole blocks from data up to the block that holds the hole's start
                    var end = Math.Min(length - length % blockSize, (hole + blockSize - 1) / blockSize * blockSize);
                    for (var at = data; at < end;)
                    {
                        var want = (int)Math.Min(per, end - at);
                        var got = ReadFull(file, buffer.AsSpan(0, want), at);
                        read += got;
                        for (var o = 0; o + blockSize <= got; o += (int)blockSize)
                        {
                            var block = buffer.AsSpan(o, (int)blockSize);
                            if (block.IndexOfAnyExcept((byte)0) < 0) continue; // zeros travel as zero ranges, never hashed
                            index.TryAdd(_hash.Compute(block), (f, at + o));
                            chunks++;
                        }
                        if (got < want) break;
                        at += got;
                    }
                    pos = Math.Max(end, pos + blockSize);
                }
            }
            catch (IOException e)
            {
                _log.Warning($"seed {_files[f].Name}: reading it for the index: {e.Message}; the rest of it is not used");
            }
        }
        var seconds = System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds;
        _log.Line($"seeds: indexed {index.Count} distinct blocks of {blockSize} bytes ({chunks} non-zero) from {SeedCount} file{(SeedCount == 1 ? "" : "s")}: " +
                  $"{read / 1048576.0:0.0} MiB read and hashed in {seconds:0.00} s ({read / 1048576.0 / Math.Max(seconds, 1e-6):0} MiB/s on one core)");
        _indexes[blockSize] = index;
        _indexed?.Invoke();
        return index;
    }

    /// <summary>Remembers that the block at <paramref name="offset"/> of file <paramref name="file"/> (an image) now holds <paramref name="block"/>.</summary>
    public void AddReceived(int file, long offset, ReadOnlySpan<byte> block)
    {
        if (!_indexes.TryGetValue((uint)block.Length, out var index)) return; // no disk of that block size asked: nothing will look
        if (block.IndexOfAnyExcept((byte)0) < 0) return;
        index.TryAdd(_hash.Compute(block), (file, offset));
    }

    /// <summary>Builds the index for <paramref name="blockSize"/> now if it is not yet.</summary>
    public void Prepare(uint blockSize) => Index(blockSize);

    /// <summary>
    /// Reads a chunk of <paramref name="target"/>.Length bytes whose hash is <paramref name="hash"/> into
    /// <paramref name="target"/>: true only if the bytes read hash to it now.
    /// </summary>
    public bool TryRead(ReadOnlySpan<byte> hash, Span<byte> target)
    {
        var index = Index((uint)target.Length);
        var key = Hash128.Read(hash);
        if (!index.TryGetValue(key, out var at)) return false;
        try
        {
            if (ReadFull(_files[at.File].File, target, at.Offset) == target.Length)
            {
                Span<byte> h = stackalloc byte[BlockHash.Size];
                _hash.Compute(target, h);
                if (h.SequenceEqual(hash)) return true;
            }
        }
        catch (IOException e)
        {
            _log.Ignored($"reading {_files[at.File].Name} at {at.Offset}", e.Message);
        }
        // changed (or gone) since it was indexed: forget it, the source sends the block
        index.Remove(key);
        Stale++;
        return false;
    }

    private static int ReadFull(SafeFileHandle file, Span<byte> target, long offset)
    {
        var got = 0;
        while (got < target.Length)
        {
            var n = RandomAccess.Read(file, target[got..], offset + got);
            if (n == 0) break;
            got += n;
        }
        return got;
    }

    public void Dispose()
    {
        _hash.Dispose();
        foreach (var f in _files.Where(f => f.Seed)) f.File.Dispose();
        _files.Clear();
    }
}
