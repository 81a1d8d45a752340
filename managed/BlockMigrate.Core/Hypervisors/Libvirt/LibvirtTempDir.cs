using System.Text.RegularExpressions;
using BlockMigrate.Files;
using BlockMigrate.Interop;
using static Tmds.Linux.LibC;

namespace BlockMigrate.Hypervisors.Libvirt;

/// <summary>
/// Private temporary directories for the domain XML the libvirt adapter and <c>adopt</c> hand to virsh:
/// <c>$TMPDIR/blockmigrate-libvirt-UID/PID-STARTTICKS-PURPOSE-RANDOM</c>, mode 0700. A run removes its
/// own when it ends; one that was killed cannot, so each new one first removes those of processes that are
/// gone (no such PID, or the PID now belongs to a process started at another time). Safely: the parent is
/// opened with O_NOFOLLOW and must be owned by us (or root) and writable by nobody else
/// (<see cref="TrustedDirectory"/>); each stale directory is opened with O_NOFOLLOW through the parent's
/// descriptor and must be a directory owned by us; its entries are unlinked through its descriptor
/// (a symlink is removed, never followed; a subdirectory is left). When the parent cannot be trusted (made
/// by someone else, a symlink), a fresh directory of <see cref="Directory.CreateTempSubdirectory"/> is used and
/// nothing is cleaned.
/// </summary>
public static unsafe partial class LibvirtTempDir
{
    private const int AtRemoveDir = 0x200; // AT_REMOVEDIR (linux/fcntl.h)

    [GeneratedRegex(@"\A(\d{1,9})-(\d{1,20})-")]
    private static partial Regex Owner();

    public static string DefaultParent => Path.Combine(Path.GetTempPath(), $"blockmigrate-libvirt-{geteuid()}");

    /// <summary>A new private directory; stale ones of earlier runs removed first (each told to <paramref name="say"/>).</summary>
    public static string Create(string purpose, Action<string> say, string? parent = null)
    {
        parent ??= DefaultParent;
        try
        {
            if (!Path.Exists(parent) && !OperatingSystem.IsWindows())
                Directory.CreateDirectory(parent, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            using var dir = TrustedDirectory.Open(parent, serviceUser: false);
            RemoveStale(dir, say);
            var name = $"{Environment.ProcessId}-{StartTicks(Environment.ProcessId) ?? 0}-{purpose}-{Guid.NewGuid():N}";
            int rc;
            fixed (byte* p = NativeMethods.Utf8z(name))
                rc = mkdirat((int)dir.Handle.DangerousGetHandle(), p, (Tmds.Linux.mode_t)0x1c0); // 0700
            if (rc != 0) throw new IOException($"{dir.PathOf(name)}: mkdir: {NativeMethods.ErrnoText(errno)}");
            return dir.PathOf(name);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            say($"temporary directory {parent}: {e.Message}; using a fresh one elsewhere (stale ones of killed runs are not removed)");
            return Directory.CreateTempSubdirectory($"blockmigrate-{purpose}-").FullName;
        }
    }

    /// <summary>Removes a directory this process made (its files, then itself); false if something stayed.</summary>
    public static bool Remove(string path)
    {
        try
        {
            Directory.Delete(path, recursive: true);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static void RemoveStale(TrustedDirectory parent, Action<string> say)
    {
        var fd = (int)parent.Handle.DangerousGetHandle();
        // the entries of the very directory we opened (not of whatever the path names now)
        foreach (var entry in Directory.EnumerateFileSystemEntries($"/proc/self/fd/{fd}"))
        {
            var name = Path.GetFileName(entry);
            var m = Owner().Match(name);
            if (!m.Success || !int.TryParse(m.Groups[1].Value, out var pid) || !ulong.TryParse(m.Groups[2].Value, out var ticks)) continue;
            if (StartTicks(pid) is { } now && (now == ticks || ticks == 0)) continue; // its process runs
            if (RemoveTree(fd, name, parent.PathOf(name)) is { } why) say($"stale temporary directory {parent.PathOf(name)} left in place: {why}");
            else say($"removed the stale temporary directory {parent.PathOf(name)} of an earlier run (process {pid}, gone)");
        }
    }

    /// <summary>Null when removed, else why not.</summary>
    private static string? RemoveTree(int parentFd, string name, string path)
    {
        int fd;
        fixed (byte* p = NativeMethods.Utf8z(name))
            fd = openat(parentFd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
        {
            var e = errno;
            return e == ELOOP || e == ENOTDIR ? "not a directory (a symbolic link or a file)" : NativeMethods.ErrnoText(e);
        }
        using (var handle = new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true))
        {
            var st = FileTrust.Stat(handle, path);
            if (st.st_uid != geteuid()) return $"owned by uid {(uint)st.st_uid}, not by us";
            foreach (var entry in Directory.EnumerateFileSystemEntries($"/proc/self/fd/{fd}"))
            {
                var file = Path.GetFileName(entry);
                int rc;
                fixed (byte* p = NativeMethods.Utf8z(file))
                    rc = unlinkat(fd, p, 0); // a symlink itself, never its target; a directory fails (EISDIR) and stays
                if (rc != 0) return $"{file}: {NativeMethods.ErrnoText(errno)}";
            }
        }
        int r;
        fixed (byte* p = NativeMethods.Utf8z(name))
            r = unlinkat(parentFd, p, AtRemoveDir);
        return r == 0 ? null : NativeMethods.ErrnoText(errno);
    }

    /// <summary>Field 22 of /proc/PID/stat (start time, clock ticks after boot); null when there is no such process.</summary>
    internal static ulong? StartTicks(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return fields.Length > 19 && ulong.TryParse(fields[19], out var t) ? t : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
