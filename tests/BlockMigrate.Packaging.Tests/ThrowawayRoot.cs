// A Debian bookworm root file system to install the package into, as an admin would.
//
// Made once by debootstrap (minbase) and kept as a tar under build/pkgtest/ so later runs only
// unpack it (a few seconds).  Every command runs through `unshare --mount --propagation private`
// and chroot: /proc is mounted inside that private mount namespace only, so it vanishes with the
// command and nothing is ever left mounted on the host, whatever happens.  /dev/shm stays the
// root's plain directory, so dirty maps outlive a command and the host can see them.
// The apt sources are the host's Debian ones, so the chroot resolves the same nbdkit the filter
// was built against.
using System.Diagnostics;

namespace BlockMigrate.Packaging.Tests;

public sealed class ThrowawayRoot : IDisposable
{
    private const string Suite = "bookworm";
    private readonly List<Process> started = [];

    public string Path { get; }

    private static string CacheDir => System.IO.Path.Combine(Tool.Top, "build/pkgtest");
    private static string Tarball => System.IO.Path.Combine(CacheDir, $"{Suite}-minbase.tar");

    private ThrowawayRoot(string path) => Path = path;

    public static ThrowawayRoot Create()
    {
        foreach (var tool in new[] { "debootstrap", "unshare", "chroot", "tar" })
            if (!Tool.Exists(tool)) throw new InvalidOperationException($"{tool} is missing (tools/install-deps.sh installs debootstrap)");
        Directory.CreateDirectory(CacheDir);
        if (!File.Exists(Tarball)) Bootstrap();
        // roots left by runs that were killed before their teardown (their test host is gone)
        foreach (var stale in Directory.GetDirectories(CacheDir, "root-*"))
            if (int.TryParse(System.IO.Path.GetFileName(stale)[5..], out var pid) && !Directory.Exists($"/proc/{pid}"))
                new ThrowawayRoot(stale).RemoveTree();
        var root = new ThrowawayRoot(System.IO.Path.Combine(CacheDir, $"root-{Environment.ProcessId}"));
        if (Directory.Exists(root.Path)) root.RemoveTree();
        Directory.CreateDirectory(root.Path);
        Check(Tool.Run("tar", ["-xf", Tarball, "-C", root.Path], TimeSpan.FromMinutes(5)), "unpack the cached root");
        root.UseHostAptSources();
        File.Copy("/etc/resolv.conf", System.IO.Path.Combine(root.Path, "etc/resolv.conf"), overwrite: true);
        Check(root.Run("apt-get update -qq", TimeSpan.FromMinutes(5)), "apt-get update in the root");
        return root;
    }

    /// <summary>Runs a shell script inside the root, as root or as uid:gid.</summary>
    public ToolResult Run(string script, TimeSpan timeout, string? userspec = null, IDictionary<string, string>? env = null) =>
        Tool.Run("unshare", Command(script, userspec, env), timeout);

    /// <summary>Starts a script inside the root and returns at once; the process is killed (by PID) on Dispose.
    /// Killing it kills the chrooted command too (--kill-child).</summary>
    /// <param name="procOptions">mount options of the root's /proc, e.g. "subset=pid,hidepid=invisible"
    /// for a unit's ProcSubset=pid and ProtectProc=invisible</param>
    public Process Start(string script, string? userspec = null, IDictionary<string, string>? env = null, string procOptions = "defaults")
    {
        var psi = new ProcessStartInfo("unshare") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in Command(script, userspec, env, killSignal: "SIGTERM", procOptions)) psi.ArgumentList.Add(a);
        var p = Process.Start(psi) ?? throw new InvalidOperationException("cannot start unshare");
        started.Add(p);
        return p;
    }

    public string HostPath(string pathInRoot) => System.IO.Path.Combine(Path, pathInRoot.TrimStart('/'));

    /// <summary>uid:gid of a user of the root's /etc/passwd, or null.</summary>
    public string? UserSpec(string user)
    {
        foreach (var line in File.ReadLines(HostPath("/etc/passwd")))
        {
            var f = line.Split(':');
            if (f.Length > 3 && f[0] == user) return $"{f[2]}:{f[3]}";
        }
        return null;
    }

    public void Dispose()
    {
        foreach (var p in started)
        {
            try { if (!p.HasExited) { p.Kill(entireProcessTree: true); p.WaitForExit(10_000); } }
            catch (InvalidOperationException) { }
            p.Dispose();
        }
        KillProcessesInside();
        RemoveTree();
    }

    /// <summary>Kills (by PID) every process whose root directory is this root, such as a
    /// daemon a unit's ExecStart forked, so none outlives the test.</summary>
    public void KillProcessesInside()
    {
        foreach (var dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(System.IO.Path.GetFileName(dir), out var pid) || pid == Environment.ProcessId) continue;
            string? procRoot;
            try { procRoot = new FileInfo(System.IO.Path.Combine(dir, "root")).LinkTarget; }
            catch (IOException) { continue; }
            catch (UnauthorizedAccessException) { continue; }
            if (procRoot != Path) continue;
            try { using var p = Process.GetProcessById(pid); p.Kill(); p.WaitForExit(10_000); }
            catch (ArgumentException) { }          // already gone
            catch (InvalidOperationException) { }
        }
    }

    private List<string> Command(string script, string? userspec, IDictionary<string, string>? env,
        string killSignal = "SIGKILL", string procOptions = "defaults")
    {
        // $0 = root, $1 = script, $2 = uid:gid or "", $3 = /proc options, "--", then NAME=value pairs for env -i
        const string wrapper =
            "set -e; r=$0; s=$1; u=$2; o=$3; shift 3; shift; " +
            "mount -t proc -o \"$o\" proc \"$r/proc\"; chmod 1777 \"$r/dev/shm\"; " +
            "if [ -n \"$u\" ]; then exec chroot --userspec=\"$u\" \"$r\" /usr/bin/env -i \"$@\" /bin/sh -c \"$s\"; " +
            "else exec chroot \"$r\" /usr/bin/env -i \"$@\" /bin/sh -c \"$s\"; fi";
        var args = new List<string>
        {
            "--mount", "--propagation", "private", "--fork", $"--kill-child={killSignal}", "--",
            "/bin/sh", "-c", wrapper, Path, script, userspec ?? "", procOptions, "--",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive",
        };
        if (env is not null) args.AddRange(env.Select(kv => $"{kv.Key}={kv.Value}"));
        return args;
    }

    private void UseHostAptSources()
    {
        const string deb822 = "/etc/apt/sources.list.d/debian.sources";
        if (File.Exists(deb822))
        {
            File.Copy(deb822, HostPath(deb822), overwrite: true);
            File.Delete(HostPath("/etc/apt/sources.list"));
        }
        else if (File.Exists("/etc/apt/sources.list"))
        {
            File.Copy("/etc/apt/sources.list", HostPath("/etc/apt/sources.list"), overwrite: true);
        }
    }

    private static void Bootstrap()
    {
        var work = System.IO.Path.Combine(CacheDir, "bootstrap");
        if (Directory.Exists(work)) Tool.Run("rm", ["-rf", "--one-file-system", work], TimeSpan.FromMinutes(2));
        var r = Tool.Run("debootstrap", ["--variant=minbase", Suite, work, Mirror()], TimeSpan.FromMinutes(15));
        Check(r, "debootstrap");
        var partial = Tarball + ".partial";
        Check(Tool.Run("tar", ["-cf", partial, "-C", work, "."], TimeSpan.FromMinutes(5)), "tar the bootstrapped root");
        File.Move(partial, Tarball, overwrite: true);
        Tool.Run("rm", ["-rf", "--one-file-system", work], TimeSpan.FromMinutes(2));
    }

    /// <summary>The host's Debian mirror (first URIs:/deb line naming /debian), else deb.debian.org.</summary>
    private static string Mirror()
    {
        foreach (var file in new[] { "/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list" })
        {
            if (!File.Exists(file)) continue;
            foreach (var line in File.ReadLines(file))
            {
                var words = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                var uri = words.FirstOrDefault(w => w.StartsWith("http", StringComparison.Ordinal) && w.TrimEnd('/').EndsWith("/debian", StringComparison.Ordinal));
                if (uri is not null && !line.TrimStart().StartsWith('#')) return uri;
            }
        }
        return "http://deb.debian.org/debian";
    }

    private void RemoveTree()
    {
        // Mounts are private to each command's namespace, but never delete through one anyway.
        var mounted = File.ReadLines("/proc/self/mountinfo").Select(l => l.Split(' ')[4])
            .Where(m => m == Path || m.StartsWith(Path + "/", StringComparison.Ordinal)).ToList();
        if (mounted.Count > 0)
            throw new InvalidOperationException($"refusing to delete {Path}: mounted: {string.Join(", ", mounted)}");
        Tool.Run("rm", ["-rf", "--one-file-system", Path], TimeSpan.FromMinutes(2));
    }

    private static void Check(ToolResult r, string what)
    {
        if (r.ExitCode != 0) throw new InvalidOperationException($"{what} failed: {r}");
    }
}
