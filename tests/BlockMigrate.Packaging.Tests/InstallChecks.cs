// Installs the .deb into a throwaway bookworm root with apt (so Depends must resolve against
// Debian), uses what it installed, and purges it.  The steps build on each other, in order.
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace BlockMigrate.Packaging.Tests;

[TestFixture, NonParallelizable]
public partial class InstallChecks
{
    private ThrowawayRoot root = null!;
    private string debInRoot = "";
    private readonly Stopwatch clock = new();

    private static readonly TimeSpan Short = TimeSpan.FromMinutes(1);

    [OneTimeSetUp]
    public void MakeRoot()
    {
        clock.Start();
        var deb = Package.Deb;
        root = ThrowawayRoot.Create();
        debInRoot = "/tmp/" + Path.GetFileName(deb);
        File.Copy(deb, root.HostPath(debInRoot));
        TestContext.Progress.WriteLine($"install checks: root ready after {clock.Elapsed.TotalSeconds:0}s");
    }

    [OneTimeTearDown]
    public void RemoveRoot()
    {
        root?.Dispose();
        TestContext.Progress.WriteLine($"install checks: {clock.Elapsed.TotalSeconds:0}s in all");
    }

    [Test, Order(1)]
    public void Apt_installs_the_package_and_its_dependencies()
    {
        var r = root.Run($"apt-get install -y -q --no-install-recommends {debInRoot}", TimeSpan.FromMinutes(10));
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        var q = root.Run("dpkg-query -W -f='${Status} ${Version}\\n' blockmigrate nbdkit; getent passwd blockmigrate; " +
                         "stat -c '%U:%G %a %n' /var/lib/blockmigrate/images; ldconfig -p | grep -c 'libblockmigrate.so.1 '; " +
                         "test -f /etc/blockmigrate/receiver.conf && echo conffile", Short);
        Assert.Multiple(() =>
        {
            Assert.That(q.Stdout, Does.Contain("install ok installed " + Package.Version), q.ToString());
            Assert.That(q.Stdout, Does.Match(@"blockmigrate:x:\d+:\d+:"), "system user");
            Assert.That(q.Stdout, Does.Contain("blockmigrate:blockmigrate 750 /var/lib/blockmigrate/images"));
            Assert.That(q.Stdout, Does.Contain("\n1\n"), "ldconfig knows libblockmigrate.so.1");
            Assert.That(q.Stdout, Does.Contain("conffile"));
        });
    }

    [Test, Order(2)]
    public void Version_is_the_package_version()
    {
        var r = root.Run("blockmigrate --version", Short);
        var upstream = Regex.Replace(Package.Version, "^[0-9]+:|-[^-]+$", "");
        Assert.Multiple(() =>
        {
            Assert.That(r.ExitCode, Is.Zero, r.ToString());
            Assert.That(r.Stdout.Trim(), Is.EqualTo(upstream));
        });
    }

    [Test, Order(3)]
    public void Shim_unit_ExecStart_serves_a_disk_and_map_reads_its_map()
    {
        // what the admin does: a disk file from the shipped example, an image the service user owns
        const string disk = "test", image = "/var/lib/blockmigrate/images/test.img";
        var example = File.ReadAllText(root.HostPath("/usr/share/doc/blockmigrate/examples/disk.conf"));
        File.WriteAllText(root.HostPath($"/etc/blockmigrate/disks/{disk}.conf"),
            Regex.Replace(example, @"(?m)^IMAGE=.*$", $"IMAGE={image}"));
        var prep = root.Run($"truncate -s 16M {image} && chown blockmigrate: {image}", Short);
        Assert.That(prep.ExitCode, Is.Zero, prep.ToString());

        // what systemd does: tmpfiles.d, then ExecStart with the unit's environment, user and umask
        var unit = File.ReadAllText(root.HostPath("/lib/systemd/system/blockmigrate-shim@.service")).Replace("%i", disk);
        Assert.That(UnitValue(unit, "Type"), Is.EqualTo("forking"));
        var env = new Dictionary<string, string>();
        foreach (Match m in Regex.Matches(unit, @"(?m)^Environment=(\w+)=(.*)$")) env[m.Groups[1].Value] = m.Groups[2].Value.Trim();
        foreach (var line in File.ReadLines(root.HostPath(UnitValue(unit, "EnvironmentFile"))))
            if (Regex.Match(line, @"^(\w+)=(.*)$") is { Success: true } m) env[m.Groups[1].Value] = m.Groups[2].Value;
        var execStart = Regex.Replace(UnitValue(unit, "ExecStart"), @"\$\{(\w+)\}", m => env[m.Groups[1].Value]);
        var pidFile = UnitValue(unit, "PIDFile");
        var tmpfiles = root.Run(TmpfilesScript(File.ReadAllText(root.HostPath("/usr/lib/tmpfiles.d/blockmigrate.conf"))), Short);
        Assert.That(tmpfiles.ExitCode, Is.Zero, tmpfiles.ToString());
        var user = root.UserSpec(UnitValue(unit, "User"))!;
        var start = root.Run($"umask {UnitValue(unit, "UMask")} && exec {execStart}", Short, user);
        try
        {
            // forking: when ExecStart returns, nbdkit listens; its daemonised child writes the PID file
            // just after the parent returns (systemd waits for it the same way), so allow it a moment
            Assert.That(start.ExitCode, Is.Zero, start.ToString());
            for (var i = 0; i < 200 && !File.Exists(root.HostPath(pidFile)); i++) Thread.Sleep(50);
            Assert.That(File.Exists(root.HostPath(pidFile)), Is.True, "PID file " + pidFile + " within 10 s");
            Assert.That(start.Stderr, Does.Not.Contain("filter is incompatible"), start.ToString());

            // QEMU's side, from the host: write 64 KiB at 1 MiB through the socket
            var uri = $"nbd+unix:///?socket={root.HostPath(env["SOCKET"])}";
            var write = Tool.Run("qemu-io", ["-f", "raw", "-c", "write -P 0xab 1M 64k", uri], Short);
            Assert.That(write.ExitCode, Is.Zero, write.ToString());

            var map = root.Run($"blockmigrate map --json {env["DIRTYMAP"]}", Short);
            TestContext.Out.WriteLine(map);
            Assert.Multiple(() =>
            {
                Assert.That(map.ExitCode, Is.Zero, map.ToString());
                var blocks = 65536 / int.Parse(env["BLOCKSIZE"]);
                Assert.That(map.Stdout, Does.Contain($"\"dirty_blocks\":{blocks},"), "64 KiB written, in blocks of the unit's size");
                Assert.That(map.Stdout, Does.Contain("\"block_size\":" + env["BLOCKSIZE"]));
            });
        }
        finally
        {
            // systemctl stop: SIGTERM to the main PID, then nothing of it may remain
            if (File.Exists(root.HostPath(pidFile)) && int.TryParse(File.ReadAllText(root.HostPath(pidFile)).Trim(), out var pid))
            {
                Process.Start("kill", ["-TERM", pid.ToString()])!.WaitForExit();
                for (var i = 0; i < 100 && Directory.Exists($"/proc/{pid}"); i++) Thread.Sleep(50);
            }
            root.KillProcessesInside();
            // received images survive a purge; these are the test's own
            root.Run($"rm -f {image} {env["DIRTYMAP"]} /etc/blockmigrate/disks/{disk}.conf", Short);
        }
    }

    /// <summary>The "d PATH MODE USER GROUP" lines of a tmpfiles.d file as install -d commands.</summary>
    private static string TmpfilesScript(string conf) =>
        string.Join(" && ", conf.Split('\n').Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Where(f => f.Length >= 5 && f[0] == "d")
            .Select(f => $"install -d -m {f[2]} -o {f[3]} -g {f[4]} {f[1]}"));

    [Test, Order(4)]
    public async Task Receiver_ExecStart_runs_in_the_foreground_and_answers()
    {
        var unit = File.ReadAllText(root.HostPath("/lib/systemd/system/blockmigrate-receiver.service"));
        var execStart = UnitValue(unit, "ExecStart");
        var credential = UnitValue(unit, "LoadCredential").Split(':', 2); // name:path
        Assert.That(UnitValue(unit, "Type"), Is.EqualTo("notify"));

        // what the admin does first: a key (keygen) and a trusted list; and a free port for this test
        var keygen = root.Run($"blockmigrate keygen --out {credential[1]} && chmod 600 {credential[1]}", Short);
        Assert.That(keygen.ExitCode, Is.Zero, keygen.ToString());
        var fingerprint = keygen.Stdout.Trim();
        Assert.That(fingerprint, Does.Match("^SHA256:[A-Za-z0-9+/]{43}$"), keygen.ToString());
        var again = root.Run($"blockmigrate fingerprint {credential[1]}", Short);
        Assert.That(again.Stdout.Trim(), Is.EqualTo(fingerprint), again.ToString());
        // a source's key, as the admin of the source host would send it
        var source = root.Run("blockmigrate keygen --out /tmp/source.key --name source", Short);
        Assert.That(source.ExitCode, Is.Zero, source.ToString());
        File.WriteAllText(root.HostPath("/etc/blockmigrate/trusted"), $"{source.Stdout.Trim()} source\n");
        var port = FreePort();
        var conf = root.HostPath("/etc/blockmigrate/receiver.conf");
        File.WriteAllText(conf, Regex.Replace(File.ReadAllText(conf), @"(?m)^listen\s*=.*$", $"listen = 127.0.0.1:{port}"));

        // what systemd does: the credential, readable by the service user only, and $NOTIFY_SOCKET
        var credDir = "/run/credentials/blockmigrate-receiver.service";
        var user = root.UserSpec("blockmigrate")!;
        var prep = root.Run($"install -d -m 0500 -o blockmigrate {credDir} && install -m 0400 -o blockmigrate {credential[1]} {credDir}/{credential[0]}", Short);
        Assert.That(prep.ExitCode, Is.Zero, prep.ToString());
        const string notifyPath = "/run/bm-test-notify.sock";
        using var notify = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        File.Delete(root.HostPath(notifyPath));
        notify.Bind(new UnixDomainSocketEndPoint(root.HostPath(notifyPath)));
        File.SetUnixFileMode(root.HostPath(notifyPath), (UnixFileMode)0x1FF);

        var command = execStart.Replace("${CREDENTIALS_DIRECTORY}", credDir);
        // ProtectProc=invisible and ProcSubset=pid, as the kernel's procfs options (other sandbox
        // settings need systemd itself; the MemoryDenyWriteExecute one is in HardeningChecks)
        Assert.That(UnitValue(unit, "ProtectProc") + " " + UnitValue(unit, "ProcSubset"), Is.EqualTo("invisible pid"));
        var receiver = root.Start($"umask {UnitValue(unit, "UMask")} && exec {command}", user,
            new Dictionary<string, string> { ["NOTIFY_SOCKET"] = notifyPath, ["CREDENTIALS_DIRECTORY"] = credDir },
            procOptions: "subset=pid,hidepid=invisible");
        var stderr = receiver.StandardError.ReadToEndAsync();
        try
        {
            var buffer = new byte[4096];
            using var ready = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            var state = "";
            while (!state.Contains("READY=1"))
            {
                var n = await notify.ReceiveAsync(buffer, SocketFlags.None, ready.Token);
                state += Encoding.UTF8.GetString(buffer, 0, n) + "\n";
            }
            TestContext.Out.WriteLine("sd_notify: " + state.Trim());
            Assert.That(state, Does.Contain($"STATUS=listening on 127.0.0.1:{port}"));

            using var client = new TcpClient();
            using var connect = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await client.ConnectAsync(IPAddress.Loopback, port, connect.Token);
            Assert.That(client.Connected, Is.True);
            Assert.That(receiver.HasExited, Is.False, "the receiver stays in the foreground");
        }
        finally
        {
            // systemctl stop: SIGTERM to the main process.  That is unshare's child (each step of
            // sh -> chroot -> env -> sh execs the next), not unshare (whose --kill-child signal is
            // cleared when chroot --userspec changes the credentials).
            var stopped = false;
            if (!receiver.HasExited && ChildOf(receiver.Id) is int main)
            {
                Process.Start("kill", ["-TERM", main.ToString()])!.WaitForExit();
                stopped = receiver.WaitForExit(15_000);
            }
            if (!stopped) receiver.Kill(entireProcessTree: true);
            var log = await stderr;
            TestContext.Out.WriteLine("receiver stderr:\n" + log);
            root.Run($"rm -rf /run/credentials {notifyPath} /tmp/source.key", Short);
            Assert.That(stopped, Is.True, "the receiver stops on SIGTERM");
            // the real receiver: its TLS key came through the credential, the trusted file was read
            Assert.That(log, Does.Contain($"listening on 127.0.0.1:{port} (TLS 1.3, key {fingerprint})"));
            Assert.That(log, Does.Contain("stopping (signal)"));
            var stopping = new byte[256];
            using var late = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            var n = await notify.ReceiveAsync(stopping, SocketFlags.None, late.Token);
            Assert.That(Encoding.UTF8.GetString(stopping, 0, n), Is.EqualTo("STOPPING=1"));
        }
    }

    [Test, Order(5)]
    public void Purge_leaves_nothing_of_ours_behind()
    {
        var r = root.Run("apt-get purge -y -q blockmigrate", TimeSpan.FromMinutes(5));
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        var left = root.Run(
            "find / -xdev \\( -path /proc -o -path /tmp \\) -prune -o -name '*blockmigrate*' -print; " +
            "grep -H blockmigrate /etc/passwd /etc/group /etc/shadow /etc/gshadow; " +
            "dpkg-query -W -f='${Status}\\n' blockmigrate 2>/dev/null | grep -v not-installed", Short);
        Assert.That(left.Stdout.Trim(), Is.Empty, "left behind after purge:\n" + left);
    }

    private static string UnitValue(string unit, string key)
    {
        var m = Regex.Match(unit, $@"(?m)^{key}=(.*)$");
        Assert.That(m.Success, Is.True, $"{key}= in the unit");
        return m.Groups[1].Value.Trim();
    }

    private static int? ChildOf(int pid)
    {
        var children = File.ReadAllText($"/proc/{pid}/task/{pid}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return children.Length == 1 ? int.Parse(children[0]) : null;
    }

    private static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        var port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }
}
