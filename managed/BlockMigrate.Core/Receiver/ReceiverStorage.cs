using BlockMigrate.Interop;
using Microsoft.Win32.SafeHandles;

namespace BlockMigrate.Receiver;

/// <summary>
/// Every point where the receiver changes what is on its disk. Each is a call on
/// <see cref="IReceiverStorage"/>, so a test can fail any one of them (tests/BlockMigrate.Engine.Tests/
/// ReceiverFaultInjectionTests.cs injects EIO and ENOSPC at each).
/// </summary>
public enum StoragePoint
{
    /// <summary>ftruncate of the image for a fresh copy (to 0, then to the disk's size).</summary>
    ImageTruncate,
    /// <summary>pwrite of a data frame into the image.</summary>
    DataWrite,
    /// <summary>a zero range: punched hole (or zeros written where punching is not supported).</summary>
    ZeroWrite,
    /// <summary>the fsync that makes frames durable before they are acknowledged (batched).</summary>
    FlushSync,
    /// <summary>the fsync of every image at the commit, before the state file says committed.</summary>
    CommitSync,
    /// <summary>ftruncate + pwrite of NAME.img.blockmigrate-state.tmp.</summary>
    StateWrite,
    /// <summary>fsync of the state file's temporary copy.</summary>
    StateSync,
    /// <summary>rename of the temporary copy over the state file.</summary>
    StateRename,
    /// <summary>fsync of the image directory (makes the rename durable).</summary>
    DirSync,
}

/// <summary>
/// The receiver's storage: the calls that write or sync its image directory. <see cref="PosixStorage"/>
/// is the real one; a test may substitute one that fails a chosen call or forgets what was not fsynced.
/// Any exception it throws (IOException) fails the session: nothing after the last completed fsync is
/// acknowledged, nothing is committed.
/// </summary>
internal interface IReceiverStorage
{
    /// <summary>openat(dir, name, O_RDWR|O_NOFOLLOW[|O_CREAT]).</summary>
    SafeFileHandle Open(SafeFileHandle dir, string name, bool create);
    void Write(SafeFileHandle file, ReadOnlySpan<byte> data, long offset, StoragePoint point);
    void Zero(SafeFileHandle file, long offset, long length, StoragePoint point);
    void Truncate(SafeFileHandle file, long length, StoragePoint point);
    void Sync(SafeFileHandle file, StoragePoint point);
    /// <summary>Renames <paramref name="from"/> over <paramref name="to"/>, both in the image directory.</summary>
    void Rename(string imageDir, string from, string to, StoragePoint point);
}

/// <summary>The real storage: pwrite, fallocate(PUNCH_HOLE), ftruncate, fsync, rename.</summary>
internal sealed class PosixStorage : IReceiverStorage
{
    public static readonly PosixStorage Instance = new();

    public SafeFileHandle Open(SafeFileHandle dir, string name, bool create) => SparseFile.OpenInDirectory(dir, name, create);

    public void Write(SafeFileHandle file, ReadOnlySpan<byte> data, long offset, StoragePoint point) => RandomAccess.Write(file, data, offset);

    public void Zero(SafeFileHandle file, long offset, long length, StoragePoint point) => SparseFile.Zero(file, offset, length);

    public void Truncate(SafeFileHandle file, long length, StoragePoint point) => SparseFile.Truncate(file, length);

    public void Sync(SafeFileHandle file, StoragePoint point) => SparseFile.Sync(file);

    public void Rename(string imageDir, string from, string to, StoragePoint point) =>
        File.Move(Path.Combine(imageDir, from), Path.Combine(imageDir, to), overwrite: true);
}
