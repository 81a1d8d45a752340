// The receiver unit sets MemoryDenyWriteExecute=yes.  systemd is not PID 1 on the build machines,
// so this check applies the same rule through the kernel directly (prctl PR_SET_MDWE, Linux 6.3+,
// which refuses writable+executable mappings exactly as the unit's seccomp filter does) and runs
// the packaged executable under it: P/Invoke into libblockmigrate, sockets, signal handling.
namespace BlockMigrate.Packaging.Tests;

[TestFixture]
public class HardeningChecks
{
    private const string Mdwe = """
        import ctypes, os, sys
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(65, 1, 0, 0, 0) != 0:   # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
            sys.exit(77)
        os.execv(sys.argv[1], sys.argv[1:])
        """;

    [Test]
    public void Cli_runs_with_MemoryDenyWriteExecute()
    {
        var staged = Package.StagedRoot;
        var exe = Path.Combine(staged, "usr/bin/blockmigrate");
        var filter = Directory.GetFiles(staged, "nbdkit-blockmigrate-filter.so", SearchOption.AllDirectories).Single();
        // maps live in a directory of their own (the sticky, world-writable /dev/shm itself is refused)
        var mapDir = Directory.CreateDirectory($"/dev/shm/bm-mdwe-{Guid.NewGuid():N}", UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute).FullName;
        var map = Path.Combine(mapDir, "vm.map");
        var env = new Dictionary<string, string> { ["LD_LIBRARY_PATH"] = Path.Combine(staged, "usr/lib/x86_64-linux-gnu") };
        try
        {
            var version = Tool.Run("/usr/bin/python3", ["-c", Mdwe, exe, "--version"], TimeSpan.FromMinutes(1), env);
            if (version.ExitCode == 77) Assert.Ignore("this kernel has no PR_SET_MDWE (Linux < 6.3)");
            Assert.That(version.ExitCode, Is.Zero, version.ToString());
            // a real map, made by the filter, read through P/Invoke under the rule
            var r = Tool.Run("nbdkit", ["-U", "-", $"--filter={filter}", "memory", "16M", $"dirtymap={map}",
                "--run", $"/usr/bin/python3 -c '{Mdwe.Replace("'", "\"")}' {exe} map --json {map}"], TimeSpan.FromMinutes(1), env);
            Assert.Multiple(() =>
            {
                Assert.That(r.ExitCode, Is.Zero, r.ToString());
                Assert.That(r.Stdout, Does.Contain("\"block_size\":4096"), r.ToString());
            });
        }
        finally { Directory.Delete(mapDir, recursive: true); }
    }
}
