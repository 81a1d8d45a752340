using Microsoft.Win32.SafeHandles;

namespace BlockMigrate.Interop;

/// <summary>Sparse-file helpers over an open file: where data is (SEEK_DATA/SEEK_HOLE), punching holes, openat.</summary>
public static class SparseFile
{
    /// <summary>
    /// The start of the next data at or after <paramref name="offset"/>, or <paramref name="end"/> when
    /// there is none before it. File systems without SEEK_DATA report everything as data.
    /// </summary>
    public static long NextData(SafeFileHandle fd, long offset, long end)
    {
        var r = NativeMethods.LSeek(fd, offset, NativeMethods.SEEK_DATA);
        if (r < 0) return System.Runtime.InteropServices.Marshal.GetLastPInvokeError() == NativeMethods.ENXIO ? end : offset;
        return Math.Min(r, end);
    }

    /// <summary>The start of the next hole at or after <paramref name="offset"/> (the end of file counts as one).</summary>
    public static long NextHole(SafeFileHandle fd, long offset, long end)
    {
        var r = NativeMethods.LSeek(fd, offset, NativeMethods.SEEK_HOLE);
        return r < 0 ? end : Math.Min(r, end);
    }

    /// <summary>Makes [offset, offset+length) read as zeros: punch a hole, or write zeros where that is not supported.</summary>
    public static void Zero(SafeFileHandle fd, long offset, long length)
    {
        if (length <= 0) return;
        if (NativeMethods.FAllocate(fd, NativeMethods.FALLOC_FL_PUNCH_HOLE | NativeMethods.FALLOC_FL_KEEP_SIZE, offset, length) == 0) return;
        var errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
        if (errno != NativeMethods.EOPNOTSUPP) throw Error("punching a hole", errno);
        var zeros = new byte[Math.Min(length, 1 << 20)];
        for (long done = 0; done < length; done += zeros.Length)
            RandomAccess.Write(fd, zeros.AsSpan(0, (int)Math.Min(zeros.Length, length - done)), offset + done);
    }

    /// <summary>Opens a directory (no symlink followed at its last component) for <see cref="OpenInDirectory"/>.</summary>
    public static SafeFileHandle OpenDirectory(string path)
    {
        var fd = NativeMethods.Open(path, NativeMethods.O_RDONLY | NativeMethods.O_DIRECTORY | NativeMethods.O_CLOEXEC, 0);
        if (fd < 0) throw Error($"opening directory {path}", System.Runtime.InteropServices.Marshal.GetLastPInvokeError());
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>openat(dir, name, O_RDWR|O_CREAT|O_NOFOLLOW): never follows a symlink planted at the name.</summary>
    public static SafeFileHandle OpenInDirectory(SafeFileHandle dir, string name, bool create)
    {
        var flags = NativeMethods.O_RDWR | NativeMethods.O_NOFOLLOW | NativeMethods.O_CLOEXEC | (create ? NativeMethods.O_CREAT : 0);
        var fd = NativeMethods.OpenAt(dir, name, flags, Convert.ToInt32("600", 8));
        if (fd < 0)
        {
            var errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            throw errno == NativeMethods.ELOOP
                ? new IOException($"{name} is a symbolic link; refusing to follow it")
                : Error($"opening {name}", errno);
        }
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    public static void Truncate(SafeFileHandle fd, long length)
    {
        if (NativeMethods.FTruncate(fd, length) != 0) throw Error("truncating", System.Runtime.InteropServices.Marshal.GetLastPInvokeError());
    }

    public static void Sync(SafeFileHandle fd)
    {
        if (NativeMethods.FSync(fd) != 0) throw Error("fsync", System.Runtime.InteropServices.Marshal.GetLastPInvokeError());
    }

    public static bool IsDiskFull(IOException e) => (e.HResult & 0xFFFF) == NativeMethods.ENOSPC || e.Message.Contains("No space left");

    private static IOException Error(string what, int errno) =>
        new($"{what}: {NativeMethods.ErrnoText(errno)}", errno == NativeMethods.ENOSPC ? NativeMethods.ENOSPC : -1);
}
