using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace BlockMigrate.Interop;

/// <summary>Sparse-file helpers over an open file: where data is (SEEK_DATA/SEEK_HOLE), punching holes, openat (libc through Tmds.LibC).</summary>
public static unsafe class SparseFile
{
    /// <summary>
    /// The start of the next data at or after <paramref name="offset"/>, or <paramref name="end"/> when
    /// there is none before it. File systems without SEEK_DATA report everything as data.
    /// </summary>
    public static long NextData(SafeFileHandle fd, long offset, long end)
    {
        long r = Guard(fd, () => lseek(NativeMethods.Fd(fd), offset, NativeMethods.SEEK_DATA));
        if (r < 0) return errno == ENXIO ? end : offset;
        return Math.Min(r, end);
    }

    /// <summary>The start of the next hole at or after <paramref name="offset"/> (the end of file counts as one).</summary>
    public static long NextHole(SafeFileHandle fd, long offset, long end)
    {
        long r = Guard(fd, () => lseek(NativeMethods.Fd(fd), offset, NativeMethods.SEEK_HOLE));
        return r < 0 ? end : Math.Min(r, end);
    }

    /// <summary>Makes [offset, offset+length) read as zeros: punch a hole, or write zeros where that is not supported.</summary>
    public static void Zero(SafeFileHandle fd, long offset, long length)
    {
        if (length <= 0) return;
        var rc = Guard(fd, () => fallocate(NativeMethods.Fd(fd), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length));
        if (rc == 0) return;
        var e = errno;
        if (e != EOPNOTSUPP) throw Error("punching a hole", e);
        var zeros = new byte[Math.Min(length, 1 << 20)];
        for (long done = 0; done < length; done += zeros.Length)
            RandomAccess.Write(fd, zeros.AsSpan(0, (int)Math.Min(zeros.Length, length - done)), offset + done);
    }

    /// <summary>Opens a directory for <see cref="OpenInDirectory"/>.</summary>
    public static SafeFileHandle OpenDirectory(string path)
    {
        int fd;
        fixed (byte* p = NativeMethods.Utf8z(path))
            fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) throw Error($"opening directory {path}", errno);
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>openat(dir, name, O_RDWR|O_CREAT|O_NOFOLLOW): never follows a symlink planted at the name.</summary>
    public static SafeFileHandle OpenInDirectory(SafeFileHandle dir, string name, bool create)
    {
        var flags = O_RDWR | O_NOFOLLOW | O_CLOEXEC | (create ? O_CREAT : 0);
        var z = NativeMethods.Utf8z(name);
        var fd = Guard(dir, () => { fixed (byte* p = z) return openat(NativeMethods.Fd(dir), p, flags, (mode_t)0x180 /* 0600 */); });
        if (fd < 0)
        {
            var e = errno;
            throw e == ELOOP
                ? new IOException($"{name} is a symbolic link; refusing to follow it")
                : Error($"opening {name}", e);
        }
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    public static void Truncate(SafeFileHandle fd, long length)
    {
        if (Guard(fd, () => ftruncate(NativeMethods.Fd(fd), length)) != 0) throw Error("truncating", errno);
    }

    public static void Sync(SafeFileHandle fd)
    {
        if (Guard(fd, () => fsync(NativeMethods.Fd(fd))) != 0) throw Error("fsync", errno);
    }

    public static bool IsDiskFull(IOException e) => (e.HResult & 0xFFFF) == ENOSPC || e.Message.Contains("No space left");

    private static IOException Error(string what, int e) =>
        new($"{what}: {NativeMethods.ErrnoText(e)}", e == ENOSPC ? ENOSPC : -1);

    /// <summary>Runs a libc call on the handle's descriptor, keeping the handle alive (and open) meanwhile.</summary>
    private static T Guard<T>(SafeHandle h, Func<T> call)
    {
        var added = false;
        try
        {
            h.DangerousAddRef(ref added);
            return call();
        }
        finally
        {
            if (added) h.DangerousRelease();
        }
    }
}
