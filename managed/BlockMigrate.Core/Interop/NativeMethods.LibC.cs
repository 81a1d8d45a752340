using System.Runtime.InteropServices;
using Tmds.Linux;

namespace BlockMigrate.Interop;

/// <summary>
/// libc: every call and constant comes from Tmds.LibC (per-architecture constants, struct stat of the
/// running architecture), except the two things its 0.5.0 lacks, declared here: SEEK_DATA/SEEK_HOLE
/// (3 and 4 on every Linux architecture) and renameat.
/// </summary>
internal static unsafe partial class NativeMethods
{
    internal const int SEEK_DATA = 3, SEEK_HOLE = 4;

    [LibraryImport("libc.so.6" /* as Tmds.LibC binds it */, EntryPoint = "renameat", SetLastError = true)]
    internal static partial int RenameAt(int olddirfd, byte* oldpath, int newdirfd, byte* newpath);

    /// <summary>The message of errno <paramref name="errno"/> (strerror_r).</summary>
    internal static string ErrnoText(int errno)
    {
        var buf = stackalloc byte[256];
        return LibC.strerror_r(errno, buf, 256) == 0 ? Marshal.PtrToStringUTF8((IntPtr)buf) ?? $"errno {errno}" : $"errno {errno}";
    }

    /// <summary>A NUL-terminated UTF-8 copy of <paramref name="s"/> for a libc path argument.</summary>
    internal static byte[] Utf8z(string s)
    {
        if (s.Contains('\0')) throw new ArgumentException("a path cannot contain NUL", nameof(s));
        var b = new byte[System.Text.Encoding.UTF8.GetByteCount(s) + 1];
        System.Text.Encoding.UTF8.GetBytes(s, b);
        return b;
    }

    internal static int Fd(Microsoft.Win32.SafeHandles.SafeFileHandle h) => (int)h.DangerousGetHandle();
}
