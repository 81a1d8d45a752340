using System.Runtime.InteropServices;
using BlockMigrate.Interop;
using Microsoft.Win32.SafeHandles;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace BlockMigrate.Files;

/// <summary>A file or directory that may not be trusted; the message names it and the fix.</summary>
public sealed class UntrustedFileException(string message) : IOException(message);

/// <summary>Who may own the files BlockMigrate trusts, and the fstat checks against them.</summary>
public static unsafe class FileTrust
{
    /// <summary>The service user of the shim and the receiver (the package creates it); maps may be its.</summary>
    public const string ServiceUser = "blockmigrate";

    public static uint EffectiveUid => geteuid();

    /// <summary>
    /// Root, this process's effective user and, when <paramref name="serviceUser"/>, user blockmigrate (looked
    /// up by libblockmigrate, so the filter, the library and this side share one rule).
    /// </summary>
    public static bool IsTrustedOwner(uint uid, bool serviceUser) =>
        uid == 0 || uid == geteuid() || (serviceUser && NativeMethods.TrustedOwner(uid) == 1);

    internal static string Owners(bool serviceUser) =>
        serviceUser ? $"root, uid {geteuid()} or user {ServiceUser}" : $"root or uid {geteuid()}";

    internal static Tmds.Linux.stat Stat(SafeHandle h, string path)
    {
        Tmds.Linux.stat st;
        var added = false;
        int rc;
        try
        {
            h.DangerousAddRef(ref added);
            rc = fstat((int)h.DangerousGetHandle(), &st);
        }
        finally
        {
            if (added) h.DangerousRelease();
        }
        if (rc != 0) throw new IOException($"{path}: fstat: {NativeMethods.ErrnoText(errno)}");
        return st;
    }

    internal static string Octal(mode_t mode) => Convert.ToString((ushort)mode & 0xfff, 8).PadLeft(4, '0');
}

/// <summary>
/// A directory opened with O_DIRECTORY|O_NOFOLLOW and checked (owned by a trusted user, not writable by
/// group or others); every file in it is then reached with openat/renameat/unlinkat through that very
/// descriptor, never by path, and never through a symlink. What root writes into a shared directory
/// goes through here: a temporary file created exclusively (O_CREAT|O_EXCL|O_NOFOLLOW, 0600), then
/// renamed over the name (a symlink planted at the name is replaced, not followed).
/// </summary>
public sealed unsafe class TrustedDirectory : IDisposable
{
    private static int _counter;
    private readonly bool _serviceUser;

    private TrustedDirectory(string path, SafeFileHandle handle, bool serviceUser)
    {
        Path = path;
        Handle = handle;
        _serviceUser = serviceUser;
    }

    public string Path { get; }
    public SafeFileHandle Handle { get; }

    /// <summary>
    /// Opens and checks <paramref name="path"/>. <paramref name="serviceUser"/>: user blockmigrate may own it
    /// too (the map directory, which the shim and the receiver write).
    /// </summary>
    public static TrustedDirectory Open(string path, bool serviceUser)
    {
        int fd;
        fixed (byte* p = NativeMethods.Utf8z(path))
            fd = open(p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
        {
            var e = errno;
            if (e == ELOOP || e == ENOTDIR)
                throw new UntrustedFileException($"directory {path} is a symbolic link or not a directory; refusing it");
            if (e == ENOENT) throw new FileNotFoundException($"directory {path} does not exist", path);
            throw new IOException($"directory {path}: {NativeMethods.ErrnoText(e)}");
        }
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            var st = FileTrust.Stat(handle, path);
            if (!S_ISDIR(st.st_mode))
                throw new UntrustedFileException($"{path} is not a directory");
            if (!FileTrust.IsTrustedOwner(st.st_uid, serviceUser))
                throw new UntrustedFileException(
                    $"directory {path} is owned by uid {(uint)st.st_uid}, not by {FileTrust.Owners(serviceUser)}; refusing it (chown root {path})");
            if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
                throw new UntrustedFileException(
                    $"directory {path} is writable by group or others (mode {FileTrust.Octal(st.st_mode)}); refusing it (chmod go-w {path})");
            return new TrustedDirectory(path, handle, serviceUser);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>The directory of <paramref name="filePath"/>, opened and checked, and the file's name in it.</summary>
    public static TrustedDirectory OpenParent(string filePath, bool serviceUser, out string name)
    {
        var full = System.IO.Path.GetFullPath(filePath);
        name = System.IO.Path.GetFileName(full);
        if (name.Length == 0 || name is "." or "..") throw new ArgumentException($"{filePath} is not a file name", nameof(filePath));
        return Open(System.IO.Path.GetDirectoryName(full) ?? "/", serviceUser);
    }

    public string PathOf(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>
    /// Opens <paramref name="name"/> (O_NOFOLLOW) and checks it is a regular file owned by a trusted user with
    /// no group or other permission bits. Null when it does not exist.
    /// </summary>
    public SafeFileHandle? OpenFile(string name, bool write)
    {
        CheckName(name);
        var flags = (write ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
        int fd;
        fixed (byte* p = NativeMethods.Utf8z(name))
            fd = openat(Dir, p, flags);
        if (fd < 0)
        {
            var e = errno;
            if (e == ENOENT) return null;
            if (e == ELOOP) throw new UntrustedFileException($"{PathOf(name)} is a symbolic link; refusing to follow it");
            throw new IOException($"{PathOf(name)}: {NativeMethods.ErrnoText(e)}");
        }
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            CheckFile(handle, PathOf(name), _serviceUser);
            return handle;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>A regular file, owned by a trusted user, mode without group or other bits (or throws).</summary>
    public static Tmds.Linux.stat CheckFile(SafeHandle handle, string path, bool serviceUser)
    {
        var st = FileTrust.Stat(handle, path);
        if (!S_ISREG(st.st_mode)) throw new UntrustedFileException($"{path} is not a regular file; refusing it");
        if (!FileTrust.IsTrustedOwner(st.st_uid, serviceUser))
            throw new UntrustedFileException($"{path} is owned by uid {(uint)st.st_uid}, not by {FileTrust.Owners(serviceUser)}; refusing it");
        if ((st.st_mode & 0x3f) != 0)
            throw new UntrustedFileException($"{path} has mode {FileTrust.Octal(st.st_mode)}, open to group or others; refusing it (chmod 600 {path})");
        return st;
    }

    /// <summary>The whole file (checked as by <see cref="OpenFile"/>), or null when it does not exist.</summary>
    public byte[]? ReadAll(string name, long maxBytes)
    {
        using var f = OpenFile(name, write: false);
        if (f is null) return null;
        var length = RandomAccess.GetLength(f);
        if (length > maxBytes) throw new IOException($"{PathOf(name)} is {length} bytes, more than the {maxBytes} expected");
        var data = new byte[length];
        var done = 0;
        while (done < data.Length)
        {
            var n = RandomAccess.Read(f, data.AsSpan(done), done);
            if (n == 0) break;
            done += n;
        }
        return done == data.Length ? data : data[..done];
    }

    /// <summary>
    /// Replaces <paramref name="name"/> with <paramref name="data"/> atomically: a temporary file created
    /// exclusively (O_NOFOLLOW; mode 0600 unless <paramref name="mode"/> says otherwise) in this directory,
    /// written, then renamed over the name.
    /// </summary>
    public void WriteAtomically(string name, ReadOnlySpan<byte> data, bool sync = false, UnixFileMode mode = UnixFileMode.UserRead | UnixFileMode.UserWrite)
    {
        var bytes = data.ToArray();
        WriteAtomically(name, length: -1, f => RandomAccess.Write(f, bytes, 0), sync, mode);
    }

    /// <summary>
    /// As <see cref="WriteAtomically(string, ReadOnlySpan{byte}, bool, UnixFileMode)"/>, with the content
    /// written by <paramref name="write"/> into the temporary file, which is first sized to
    /// <paramref name="length"/> bytes (unless negative): parts it does not write are holes that read as zeros.
    /// </summary>
    public void WriteAtomically(string name, long length, Action<SafeFileHandle> write, bool sync = false, UnixFileMode mode = UnixFileMode.UserRead | UnixFileMode.UserWrite)
    {
        CheckName(name);
        var tmp = $".{name}.tmp.{Environment.ProcessId}.{Interlocked.Increment(ref _counter)}";
        int fd;
        fixed (byte* p = NativeMethods.Utf8z(tmp))
            fd = openat(Dir, p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, (mode_t)0x180);
        if (fd < 0) throw new IOException($"{PathOf(name)}: creating {tmp}: {NativeMethods.ErrnoText(errno)}");
        var renamed = false;
        try
        {
            using (var f = new SafeFileHandle(fd, ownsHandle: true))
            {
                if (fchmod(fd, (mode_t)(uint)mode) != 0) throw new IOException($"{PathOf(tmp)}: chmod: {NativeMethods.ErrnoText(errno)}");
                if (length >= 0) SparseFile.Truncate(f, length);
                write(f);
                if (sync) SparseFile.Sync(f);
            }
            int rc;
            fixed (byte* from = NativeMethods.Utf8z(tmp))
            fixed (byte* to = NativeMethods.Utf8z(name))
                rc = NativeMethods.RenameAt(Dir, from, Dir, to);
            if (rc != 0) throw new IOException($"{PathOf(name)}: renaming {tmp} over it: {NativeMethods.ErrnoText(errno)}");
            renamed = true;
        }
        finally
        {
            if (!renamed) Unlink(tmp);
        }
    }

    /// <summary>Removes <paramref name="name"/> (whatever it is, a symlink included: never what it points to). False if absent.</summary>
    public bool Delete(string name)
    {
        CheckName(name);
        if (Unlink(name)) return true;
        var e = errno;
        if (e == ENOENT) return false;
        throw new IOException($"{PathOf(name)}: removing: {NativeMethods.ErrnoText(e)}");
    }

    private bool Unlink(string name)
    {
        fixed (byte* p = NativeMethods.Utf8z(name))
            return unlinkat(Dir, p, 0) == 0;
    }

    private int Dir => (int)Handle.DangerousGetHandle();

    private static void CheckName(string name)
    {
        if (name.Length == 0 || name.Contains('/') || name is "." or "..")
            throw new ArgumentException($"'{name}' is not a file name", nameof(name));
    }

    public void Dispose() => Handle.Dispose();
}
