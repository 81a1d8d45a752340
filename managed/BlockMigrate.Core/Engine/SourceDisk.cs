using BlockMigrate.Files;
using BlockMigrate.Logging;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using BlockMigrate.Maps;
using Microsoft.Win32.SafeHandles;

namespace BlockMigrate.Engine;

/// <summary>
/// One disk at the source: its map, its image (read directly, not through NBD) and the bits that are
/// out: taken from the map and not yet acknowledged by the receiver. On abort those go back into the map.
/// <para>
/// The outstanding bits are also kept in a file beside the map (<c>MAP.outstanding</c>, in /dev/shm
/// like the map, so it survives our process but not a reboot), so that a run killed with SIGKILL can
/// still be resumed: a later run ORs them back into the map (<see cref="RecoverOutstanding"/>).
/// Layout: 8 bytes "BMOUT1\0\0", 16 bytes lineage, 1 byte valid, 7 bytes padding, then the words.
/// Before each take the file is marked invalid, and rewritten valid (outstanding ∪ taken) after it:
/// a run killed between the two leaves an invalid file, and the next run copies afresh. The file may
/// list bits acknowledged since it was last written; resending those is merely redundant.
/// </para>
/// <para>
/// Acknowledgements do not write the file (they arrive on the ack path, under the sender's lock): they
/// wake a background writer, which writes the current bits, then sleeps 200 ms, so the writes of a busy
/// link coalesce and the file lags the acks by 200 ms at most. Takes, <see cref="SyncOutstanding"/> and
/// the deletions write under the same file lock (<c>_fileLock</c>, taken before <c>_lock</c>), each
/// with bits copied under that lock (piece by piece, pieces without a bit left as holes of the file):
/// a write never puts back an older state over a newer one, and never a valid record without bits a
/// take added. <see cref="Dispose"/> stops the writer and
/// writes the last state if it changed, so a run that fails or aborts leaves the record current.
/// </para>
/// <para>
/// The map's directory is shared with the shim (user blockmigrate), and this process is root: the file is
/// reached only through the checked directory descriptor (<see cref="TrustedDirectory"/>), read with
/// O_NOFOLLOW and an owner/mode check, and every write is a new file created exclusively (0600) and
/// renamed over the name, so a symlink planted at <c>MAP.outstanding</c> is replaced, never followed.
/// </para>
/// </summary>
internal sealed class SourceDisk : IDisposable
{
    private readonly object _lock = new();
    private readonly OutstandingBits _outstanding; // guarded by _lock: memory follows the blocks out, not the disk
    private long _changes;                  // guarded by _lock: bumped on every change of _outstanding
    private readonly object _fileLock = new(); // one writer of the file at a time; taken before _lock
    private long _writtenChanges;           // guarded by _fileLock: the _changes the file (or its absence) reflects
    private bool _recordGone;               // guarded by _fileLock: deleted (given back, forgotten, recovered); acks do not bring it back
    private bool _persistDisabled;          // guarded by _fileLock: the record cannot be written here (read-only directory)
    private const int PersistEveryMs = 200;
    private readonly SemaphoreSlim _writeSignal = new(0);
    private int _writeRequested;            // Interlocked: 1 while a wake-up of the writer is pending
    private readonly CancellationTokenSource _writerStop = new();
    private Task? _writer;
    private volatile MigrationException? _writerFailure;

    private readonly ILogger _log;

    public SourceDisk(ushort index, DiskSpec spec, ILogger? log = null)
    {
        _log = log ?? NullLogger.Instance;
        Index = index;
        Spec = spec;
        if (!File.Exists(spec.MapPath)) throw new MigrationException($"disk {spec.Name}: dirty map {spec.MapPath} not found (is the shim serving it?)");
        Map = DirtyMap.Open(spec.MapPath);
        try
        {
            Image = File.OpenHandle(spec.ImagePath, FileMode.Open, FileAccess.Read);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Map.Dispose();
            throw new MigrationException($"disk {spec.Name}: cannot open image {spec.ImagePath}: {e.Message}");
        }
        var length = RandomAccess.GetLength(Image);
        if ((ulong)length != Map.ImageSize)
        {
            Dispose();
            throw new MigrationException($"disk {spec.Name}: image {spec.ImagePath} is {length} bytes but its map {spec.MapPath} covers {Map.ImageSize}; wrong map?");
        }
        _outstanding = new OutstandingBits(Map.Words);
        OutstandingPath = spec.MapPath + ".outstanding";
        try
        {
            _mapDir = TrustedDirectory.OpenParent(OutstandingPath, serviceUser: true, out _outstandingName);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Dispose();
            throw new MigrationException($"disk {spec.Name}: {e.Message}");
        }
        _writer = Task.Run(WriteLoopAsync);
    }

    private readonly TrustedDirectory? _mapDir;
    private readonly string _outstandingName = "";

    private const int OutstandingHeader = 32;
    private static readonly byte[] OutstandingMagic = "BMOUT1\0\0"u8.ToArray();

    /// <summary>Where the outstanding bits are kept across a crash of this process.</summary>
    public string OutstandingPath { get; }

    public ushort Index { get; }
    public DiskSpec Spec { get; }
    public string Name => Spec.Name;
    public DirtyMap Map { get; }
    public SafeFileHandle Image { get; }
    public uint BlockSize => Map.BlockSize;
    public ulong Size => Map.ImageSize;
    public bool Frozen { get; set; }
    /// <summary>This run finishes an earlier hand-over (the map's cookie says "handed over").</summary>
    public bool Finishing { get; set; }
    /// <summary>The handshake kept this map's bits (a resume, or a finishing re-run), not a fresh copy.</summary>
    public bool Resumed { get; set; }
    public ResumeCookie? Cookie { get; set; }
    /// <summary>The disk lineage and generation this migration's hand-over records at both ends (null: none, an old receiver).</summary>
    public string? DiskLineage { get; set; }
    public ulong Generation { get; set; }
    /// <summary>Blocks the receiver kept from its return base (not sent); 0 unless the return claim was accepted.</summary>
    public ulong ReturnBaseBlocks { get; set; }
    /// <summary>
    /// Takes every dirty bit (atomically per word) and holds it as outstanding until acknowledged; returns
    /// the taken blocks as ascending, disjoint ranges. The map is taken piece by piece through one small
    /// buffer: no array the size of the bitmap is made, only the ranges (as many as runs of dirty blocks).
    /// </summary>
    public List<BlockRange> Take(out ulong count)
    {
        lock (_fileLock)
        {
            PersistOutstanding(valid: false); // invalid before the take
            var ranges = new List<BlockRange>();
            count = 0;
            long changes;
            lock (_lock)
            {
                var piece = _piece;
                for (ulong w = 0; w < _outstanding.Words; w += (ulong)piece.Length)
                {
                    var words = piece.AsSpan(0, (int)Math.Min((ulong)piece.Length, _outstanding.Words - w));
                    var n = Map.Take(w, words);
                    if (n == 0) continue;
                    count += n;
                    _outstanding.Or(w, words);
                    BlockRange.AppendBits(ranges, words, w);
                }
                changes = ++_changes;
            }
            _recordGone = false;
            PersistOutstanding(valid: true); // valid after it: outstanding ∪ taken
            _writtenChanges = changes;
            return ranges;
        }
    }

    // the buffer the map is taken through, and the record written from (guarded by _fileLock)
    private readonly ulong[] _piece = new ulong[PieceWords];
    private const int PieceWords = 8192; // 64 KiB: 32 GiB of disk at 4 KiB blocks

    /// <summary>The receiver has written blocks [first, first+count): they are no longer ours to give back.</summary>
    public void Acknowledge(ulong first, ulong count)
    {
        lock (_lock)
        {
            _outstanding.Clear(first, count);
            _changes++;
        }
        if (_writerFailure is { } failure) throw failure;
        if (Interlocked.Exchange(ref _writeRequested, 1) == 0) _writeSignal.Release();
    }

    /// <summary>Writes the outstanding bits to their file now (e.g. before a long phase without takes).</summary>
    public void SyncOutstanding()
    {
        lock (_fileLock) WriteCurrent(onlyIfChanged: false);
    }

    // guarded by _fileLock
    private void WriteCurrent(bool onlyIfChanged)
    {
        long changes;
        lock (_lock)
        {
            if (onlyIfChanged && (_recordGone || _changes == _writtenChanges)) return;
            changes = _changes;
        }
        _recordGone = false;
        PersistOutstanding(valid: true);
        _writtenChanges = changes;
    }

    /// <summary>The background writer: after each wake-up (an ack), the current bits if they changed, then 200 ms of rest.</summary>
    private async Task WriteLoopAsync()
    {
        try
        {
            while (true)
            {
                await _writeSignal.WaitAsync(_writerStop.Token);
                Interlocked.Exchange(ref _writeRequested, 0);
                lock (_fileLock) WriteCurrent(onlyIfChanged: true);
                await Task.Delay(PersistEveryMs, _writerStop.Token);
            }
        }
        catch (OperationCanceledException) when (_writerStop.IsCancellationRequested)
        {
        }
        catch (MigrationException e)
        {
            _writerFailure = e; // thrown to the next Acknowledge: the migration fails as when acks wrote the file
        }
    }

    /// <summary>Blocks taken and not yet acknowledged.</summary>
    public ulong OutstandingCount()
    {
        lock (_lock) return CountOutstanding();
    }

    // guarded by _lock
    private ulong CountOutstanding()
    {
        return _outstanding.Count();
    }

    /// <summary>Puts every outstanding bit back into the map (atomic OR); returns how many blocks went back.</summary>
    public ulong GiveBack()
    {
        lock (_fileLock)
        lock (_lock)
        {
            var n = CountOutstanding();
            foreach (var (firstWord, words) in _outstanding.Chunks()) Map.MarkWords(firstWord, words.Span);
            _outstanding.ClearAll();
            DeleteOutstandingFile();
            return n;
        }
    }

    /// <summary>After the commit: the destination owns everything.</summary>
    public void ForgetOutstanding()
    {
        lock (_fileLock)
        lock (_lock)
        {
            _outstanding.ClearAll();
            DeleteOutstandingFile();
        }
    }

    /// <summary>
    /// A previous run of <paramref name="lineage"/> died without giving its bits back: put the bits it
    /// had out (from its file) back into the map. False if there is no valid file of that lineage
    /// (then only a fresh copy is safe).
    /// </summary>
    public bool RecoverOutstanding(byte[] lineage)
    {
        lock (_fileLock)
        lock (_lock)
        {
            byte[]? data;
            try
            {
                data = _mapDir!.ReadAll(_outstandingName, OutstandingHeader + (long)_outstanding.Words * 8L);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return false;
            }
            if (data is null || data.Length != OutstandingHeader + (long)_outstanding.Words * 8 || !data.AsSpan(0, 8).SequenceEqual(OutstandingMagic)
                || !data.AsSpan(8, 16).SequenceEqual(lineage) || data[24] != 1)
                return false;
            Map.MarkWords(0, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(data.AsSpan(OutstandingHeader)));
            DeleteOutstandingFile();
            return true;
        }
    }

    // guarded by _fileLock: a valid record of the outstanding bits, or an invalid one (no bits)
    // The bits are copied piece by piece (each under _lock) and only the pieces holding a bit are
    // written: the rest of the file is a hole (reads as zeros). Under _fileLock no bit is added (takes
    // hold it), only acknowledgements remove some meanwhile, so the file lists every bit that is still
    // outstanding when it is complete (and perhaps some acknowledged since: merely sent again).
    private void PersistOutstanding(bool valid)
    {
        if (Cookie is not { } cookie || _persistDisabled) return;
        var header = new byte[OutstandingHeader];
        OutstandingMagic.CopyTo(header, 0);
        cookie.Lineage.AsSpan(0, 16).CopyTo(header.AsSpan(8));
        header[24] = valid ? (byte)1 : (byte)0;
        try
        {
            // a new file renamed over the old one: "invalid" before the take, "valid" after it
            _mapDir!.WriteAtomically(_outstandingName, OutstandingHeader + (valid ? (long)_outstanding.Words * 8L : 0), f =>
            {
                RandomAccess.Write(f, header, 0);
                if (!valid) return;
                // chunk by chunk (4 KiB of bitmap): a scattered set of blocks writes a page per block at most
                var piece = _piece.AsSpan(0, OutstandingBits.ChunkWords);
                for (ulong w = 0; w < _outstanding.Words; w += (ulong)piece.Length)
                {
                    var n = (int)Math.Min((ulong)piece.Length, _outstanding.Words - w);
                    bool any;
                    lock (_lock) any = _outstanding.CopyTo(w, piece[..n]);
                    if (!any) continue;
                    var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(piece[..n]);
                    if (bytes.IndexOfAnyExcept((byte)0) >= 0) RandomAccess.Write(f, bytes, OutstandingHeader + (long)w * 8L);
                }
            });
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Without the record a run killed later is copied afresh, as before it existed; but a stale
            // valid record must not survive, or that copy would miss blocks.
            try
            {
                _mapDir!.Delete(_outstandingName);
            }
            catch (Exception d) when (d is IOException or UnauthorizedAccessException)
            {
                throw new MigrationException($"disk {Name}: cannot write or remove {OutstandingPath}: {e.Message}");
            }
            _log.Ignored($"disk {Name}: writing {OutstandingPath} (removed; a run killed from now on copies afresh)", e.Message);
            _persistDisabled = true;
        }
    }

    // guarded by _fileLock and _lock
    private void DeleteOutstandingFile()
    {
        _recordGone = true;
        _writtenChanges = _changes;
        try { _mapDir?.Delete(_outstandingName); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _log.Ignored($"disk {Name}: removing {OutstandingPath}", e.Message);
        }
    }

    public void Dispose()
    {
        if (_writer != null)
        {
            _writerStop.Cancel();
            try
            {
                _writer.Wait(TimeSpan.FromSeconds(5));
            }
            catch (AggregateException e) { _log.Ignored($"disk {Name}: the record writer", e.InnerException?.Message ?? e.Message); }
            try
            {
                lock (_fileLock) WriteCurrent(onlyIfChanged: true); // the last state, whatever ended the run
            }
            catch (MigrationException e)
            {
                _log.Ignored($"disk {Name}: writing {OutstandingPath} at the end", e.Message);
            }
            _writer = null;
        }
        Image?.Dispose();
        Map.Dispose();
        _mapDir?.Dispose();
    }
}
