using BlockMigrate.Interop;
using BlockMigrate.Receiver;
using Microsoft.Win32.SafeHandles;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// The receiver's storage (<see cref="IReceiverStorage"/>) over real files, plus what a real disk would
/// still hold after a power loss: a shadow copy of each file receives a write only when an fsync of
/// that file succeeds, a rename only when the directory's fsync succeeds. <see cref="Fault"/> fails the
/// Nth call at one <see cref="StoragePoint"/> with an errno, once, like Linux: a failed fsync forgets the
/// writes it did not make durable (their pages are marked clean), and the next fsync succeeds.
/// <see cref="PowerOff"/> fails every later call; <see cref="Revert"/> puts the shadows in place of the
/// live files, i.e. the image directory as it would be after the reboot.
/// </summary>
internal sealed class SimulatedDisk(string imageDir, string shadowDir) : IReceiverStorage
{
    public const int EIO = 5, ENOSPC = 28;

    private readonly object _lock = new();
    private readonly Dictionary<SafeFileHandle, string> _names = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<string, List<(long Offset, long Length, bool Truncate)>> _pending = [];
    private readonly List<(string From, string To)> _renames = [];
    private readonly HashSet<string> _created = [];
    private readonly Dictionary<StoragePoint, int> _calls = [];
    private long _bytesWritten;

    /// <summary>Fail the <c>Nth</c> call (1-based) at this point with this errno.</summary>
    public (StoragePoint Point, int Nth, int Errno)? Fault { get; init; }
    /// <summary>Whether <see cref="Fault"/> was hit.</summary>
    public bool Fired { get; private set; }
    public bool PoweredOff { get; private set; }
    public long BytesWritten => Interlocked.Read(ref _bytesWritten);

    public int Calls(StoragePoint point)
    {
        lock (_lock) return _calls.GetValueOrDefault(point);
    }

    public void PowerOff()
    {
        lock (_lock) PoweredOff = true;
    }

    public SafeFileHandle Open(SafeFileHandle dir, string name, bool create)
    {
        lock (_lock)
        {
            if (PoweredOff) throw Error("open", EIO);
            var existed = File.Exists(Path.Combine(imageDir, name));
            var fd = SparseFile.OpenInDirectory(dir, name, create);
            _names[fd] = name;
            if (!existed) _created.Add(name);
            return fd;
        }
    }

    public void Write(SafeFileHandle file, ReadOnlySpan<byte> data, long offset, StoragePoint point)
    {
        lock (_lock)
        {
            Check(point, "pwrite");
            RandomAccess.Write(file, data, offset);
            Pending(file).Add((offset, data.Length, false));
            _bytesWritten += data.Length;
        }
    }

    public void Zero(SafeFileHandle file, long offset, long length, StoragePoint point)
    {
        lock (_lock)
        {
            Check(point, "punching a hole");
            SparseFile.Zero(file, offset, length);
            Pending(file).Add((offset, length, false));
        }
    }

    public void Truncate(SafeFileHandle file, long length, StoragePoint point)
    {
        lock (_lock)
        {
            Check(point, "truncating");
            SparseFile.Truncate(file, length);
            Pending(file).Add((length, 0, true));
        }
    }

    public void Sync(SafeFileHandle file, StoragePoint point)
    {
        lock (_lock)
        {
            var isDir = !_names.ContainsKey(file);
            try
            {
                Check(point, "fsync");
            }
            catch (IOException)
            {
                // Linux: the pages that failed are marked clean; the error is reported once
                if (isDir) _renames.Clear();
                else Pending(file).Clear();
                throw;
            }
            SparseFile.Sync(file);
            if (isDir)
            {
                foreach (var (from, to) in _renames)
                    if (File.Exists(Shadow(from))) File.Move(Shadow(from), Shadow(to), overwrite: true);
                    else File.Delete(Shadow(to));
                _renames.Clear();
                foreach (var name in _created)
                    if (!File.Exists(Shadow(name))) File.Create(Shadow(name)).Dispose();
                _created.Clear();
                return;
            }
            var n = _names[file];
            _created.Remove(n); // lenient: an fsynced file counts as present
            using var shadow = File.Open(Shadow(n), FileMode.OpenOrCreate, FileAccess.ReadWrite);
            var buffer = new byte[1 << 20];
            foreach (var (offset, length, truncate) in Pending(file))
            {
                if (truncate)
                {
                    shadow.SetLength(offset);
                    continue;
                }
                var live = RandomAccess.GetLength(file);
                for (var pos = offset; pos < Math.Min(offset + length, live);)
                {
                    var got = RandomAccess.Read(file, buffer.AsSpan(0, (int)Math.Min(buffer.Length, Math.Min(offset + length, live) - pos)), pos);
                    if (got == 0) break;
                    RandomAccess.Write(shadow.SafeFileHandle, buffer.AsSpan(0, got), pos);
                    pos += got;
                }
            }
            Pending(file).Clear();
        }
    }

    public void Rename(string dir, string from, string to, StoragePoint point)
    {
        lock (_lock)
        {
            Check(point, "rename");
            File.Move(Path.Combine(dir, from), Path.Combine(dir, to), overwrite: true);
            _renames.Add((from, to));
            // the live name moved: writes pending under the old name follow it
            foreach (var (fd, n) in _names.ToList())
                if (n == from) _names[fd] = to;
            if (_pending.Remove(from, out var p)) _pending[to] = p;
        }
    }

    /// <summary>The reboot: every file of the image directory becomes what its shadow holds (or goes).</summary>
    public void Revert()
    {
        lock (_lock)
        {
            var names = Directory.GetFiles(imageDir).Select(Path.GetFileName).Concat(Directory.GetFiles(shadowDir).Select(Path.GetFileName)).Distinct();
            foreach (var name in names)
            {
                var live = Path.Combine(imageDir, name!);
                if (File.Exists(Shadow(name!))) File.Copy(Shadow(name!), live, overwrite: true);
                else File.Delete(live);
            }
            _pending.Clear();
            _renames.Clear();
            _created.Clear();
        }
    }

    private List<(long, long, bool)> Pending(SafeFileHandle file)
    {
        var n = _names[file];
        if (!_pending.TryGetValue(n, out var list)) _pending[n] = list = [];
        return list;
    }

    private string Shadow(string name) => Path.Combine(shadowDir, name);

    private void Check(StoragePoint point, string what)
    {
        if (PoweredOff) throw Error(what, EIO);
        var n = _calls[point] = _calls.GetValueOrDefault(point) + 1;
        if (Fault is { } f && f.Point == point && f.Nth == n)
        {
            Fired = true;
            throw Error($"{what} (injected at {point} #{n})", f.Errno);
        }
    }

    private static IOException Error(string what, int errno) =>
        new($"{what}: {(errno == ENOSPC ? "No space left on device" : "Input/output error")}", errno == ENOSPC ? ENOSPC : -1);
}
