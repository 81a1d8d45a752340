using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace BlockMigrate.Interop;

/// <summary>The few libc calls .NET does not expose: sparse-file probing, hole punching, openat with O_NOFOLLOW.</summary>
internal static partial class NativeMethods
{
    private const string LibC = "libc";

    internal const int SEEK_DATA = 3, SEEK_HOLE = 4;
    internal const int ENXIO = 6, ENOSPC = 28, ELOOP = 40, EOPNOTSUPP = 95;
    internal const int O_RDONLY = 0, O_RDWR = 2, O_CREAT = 0x40, O_DIRECTORY = 0x10000, O_NOFOLLOW = 0x20000, O_CLOEXEC = 0x80000;
    internal const int FALLOC_FL_KEEP_SIZE = 1, FALLOC_FL_PUNCH_HOLE = 2;

    [LibraryImport(LibC, EntryPoint = "lseek", SetLastError = true)]
    internal static partial long LSeek(SafeFileHandle fd, long offset, int whence);

    [LibraryImport(LibC, EntryPoint = "fallocate", SetLastError = true)]
    internal static partial int FAllocate(SafeFileHandle fd, int mode, long offset, long length);

    [LibraryImport(LibC, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Open(string path, int flags, int mode);

    [LibraryImport(LibC, EntryPoint = "openat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int OpenAt(SafeFileHandle dirfd, string path, int flags, int mode);

    [LibraryImport(LibC, EntryPoint = "ftruncate", SetLastError = true)]
    internal static partial int FTruncate(SafeFileHandle fd, long length);

    [LibraryImport(LibC, EntryPoint = "fsync", SetLastError = true)]
    internal static partial int FSync(SafeFileHandle fd);

    [LibraryImport(LibC, EntryPoint = "strerror")]
    internal static partial IntPtr StrError(int errnum);

    internal static string ErrnoText(int errno) => Marshal.PtrToStringUTF8(StrError(errno)) ?? $"errno {errno}";
}
