// The package under a real systemd: a Debian bookworm guest (QEMU, TCG) boots with systemd as
// PID 1, installs the .deb with dpkg, and starts blockmigrate-receiver and blockmigrate-shim@vm0
// exactly as shipped (sandbox and all).  The host migrates a disk into it: a source image behind
// the package's own filter in nbdkit, `blockmigrate migrate` (the package's own binary) to the
// receiver through a loopback forward.  The guest then records what the tests check: unit states,
// the sandbox the kernel reports for each main process, the socket and map modes, the received
// image's hash, a read of it through the shim's socket, the journal, and a purge with both units
// running.  The guest only records (systemd-guest/job.sh); every assertion is here.
//
// One scenario in OneTimeSetUp (booting costs a minute or more under TCG), one test per promise.
// The image is built once (minutes) and cached under build/systemd-guest/ (build-image.sh).
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace BlockMigrate.Packaging.Tests;

[TestFixture, NonParallelizable, Category("SystemdGuest")]
public class SystemdGuestTests
{
    private const string Disk = "vm0", QemuGroup = "bmvm";
    private const long DiskBytes = 32L << 20;
    private const string Receiver = "blockmigrate-receiver.service", Shim = "blockmigrate-shim@" + Disk + ".service";

    private string work = "";
    private string results = "";
    private string sourceSha = "";
    private string receiverFingerprint = "";
    private ToolResult? migrate;
    private readonly Stopwatch clock = new();

    [OneTimeSetUp]
    public async Task BootInstallMigrate()
    {
        clock.Start();
        var deb = Package.Deb;
        var image = SystemdGuest.Image(deb);
        TestContext.Progress.WriteLine($"systemd guest: image {image} ready after {clock.Elapsed.TotalSeconds:0}s ({File.ReadAllText(Path.Combine(image, "info")).Replace('\n', ' ')})");

        // 0700: the map directory checks; under build/ so that the results can be kept (below)
        work = Path.Combine(Tool.Top, "build/systemd-guest", $"run-{Environment.ProcessId}-{Guid.NewGuid():N}"[..24]);
        Directory.CreateDirectory(work, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        results = Path.Combine(work, "results");
        var cli = Path.Combine(Package.StagedRoot, "usr/bin/blockmigrate");
        var libDir = Path.GetDirectoryName(Directory.GetFiles(Package.StagedRoot, "libblockmigrate.so.*", SearchOption.AllDirectories)[0])!;
        var filter = Directory.GetFiles(Package.StagedRoot, "nbdkit-blockmigrate-filter.so", SearchOption.AllDirectories).Single();
        var env = new Dictionary<string, string> { ["LD_LIBRARY_PATH"] = libDir, ["BLOCKMIGRATE_RUN_DIR"] = Path.Combine(work, "run") };
        Directory.CreateDirectory(Path.Combine(work, "run"));

        // keys: the receiver's goes into the guest, the source's fingerprint into its trusted file
        var job = Directory.CreateDirectory(Path.Combine(work, "job")).FullName;
        var rk = Tool.Run(cli, ["keygen", "--out", Path.Combine(job, "receiver.key"), "--name", "bmguest"], TimeSpan.FromMinutes(1), env);
        var sk = Tool.Run(cli, ["keygen", "--out", Path.Combine(work, "source.key"), "--name", "host"], TimeSpan.FromMinutes(1), env);
        Assert.That(rk.ExitCode + sk.ExitCode, Is.Zero, rk + "\n" + sk);
        receiverFingerprint = rk.Stdout.Trim();
        File.WriteAllText(Path.Combine(job, "trusted"), $"{sk.Stdout.Trim()} host\n");
        File.Copy(SystemdGuest.Script("job.sh"), Path.Combine(job, "run.sh"));
        File.Copy(deb, Path.Combine(job, "blockmigrate.deb"));
        File.WriteAllText(Path.Combine(job, "params"), $"DISK={Disk}\nSIZE={DiskBytes}\nQEMU_GROUP={QemuGroup}\n");

        // the source disk: random data, a hole, a pattern, behind nbdkit with the package's filter
        var source = Path.Combine(work, "source.img");
        var map = Path.Combine(work, "maps", Disk + ".map");
        Directory.CreateDirectory(Path.GetDirectoryName(map)!, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        WriteSource(source);
        sourceSha = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(source)));
        var nbdkitPid = Path.Combine(work, "nbdkit.pid");
        var shim = Tool.Run("nbdkit", ["--pidfile", nbdkitPid, "-U", Path.Combine(work, "source.sock"), "--filter=" + filter,
            "file", "file=" + source, "dirtymap=" + map], TimeSpan.FromMinutes(1));
        Assert.That(shim.ExitCode, Is.Zero, "source shim: " + shim);
        try
        {
            var port = FreePort();
            using var guest = SystemdGuest.Start(image, work, job, port);
            try
            {
                var first = await guest.ReadLineAsync(TimeSpan.FromMinutes(8));
                TestContext.Progress.WriteLine($"systemd guest: {first} after {clock.Elapsed.TotalSeconds:0}s");
                if (first == "BM-READY")
                {
                    var t = Stopwatch.StartNew();
                    migrate = Tool.Run(cli, ["migrate", "--disk", $"{Disk}={source}:{map}", "--to", $"127.0.0.1:{port}",
                        "--key", Path.Combine(work, "source.key"), "--peer-fingerprint", receiverFingerprint, "--json", "--timeout", "300"],
                        TimeSpan.FromMinutes(6), env);
                    TestContext.Progress.WriteLine($"systemd guest: migrate exit {migrate.ExitCode} in {t.Elapsed.TotalSeconds:0.0}s");
                    TestContext.Out.WriteLine("migrate: " + migrate);
                    guest.Send("DONE");
                }
                var end = first == "BM-END" ? first : await guest.ReadLineAsync(TimeSpan.FromMinutes(5));
                Assert.That(end, Is.EqualTo("BM-END"), "the guest's last word");
                Assert.That(guest.WaitForExit(TimeSpan.FromMinutes(3)), Is.True, "the guest powers off");
                guest.ExtractResults(results);
                TestContext.Progress.WriteLine($"systemd guest: powered off after {clock.Elapsed.TotalSeconds:0}s; booted in {Result("uptime-at-job").Trim()}s (guest uptime when the job started)");
                Assert.That(first, Is.EqualTo("BM-READY"), "the receiver and the shim started; job log:\n" + Result("job.log") + Result("journal-boot"));
            }
            finally
            {
                TestContext.Out.WriteLine("--- guest console (tail)\n" + guest.ConsoleTail(200));
                File.Copy(guest.ConsoleLog, Path.Combine(Tool.Top, "build/systemd-guest/last-console.log"), overwrite: true);
            }
        }
        finally
        {
            if (File.Exists(nbdkitPid) && int.TryParse(File.ReadAllText(nbdkitPid).Trim(), out var pid))
            {
                try { using var p = Process.GetProcessById(pid); p.Kill(); p.WaitForExit(10_000); }
                catch (ArgumentException) { }
            }
        }
    }

    [OneTimeTearDown]
    public void Cleanup()
    {
        TestContext.Progress.WriteLine($"systemd guest: {clock.Elapsed.TotalSeconds:0}s in all");
        if (work.Length > 0 && Directory.Exists(work))
        {
            // the guest's records of the last run stay for a look after a failure
            var keep = Path.Combine(Tool.Top, "build/systemd-guest/last-results");
            if (Directory.Exists(keep)) Directory.Delete(keep, recursive: true);
            if (Directory.Exists(results)) Directory.Move(results, keep);
            Directory.Delete(work, recursive: true);
        }
    }

    [Test]
    public void Receiver_and_shim_start_under_systemd_and_stay_up()
    {
        var before = Show("show-before");
        var after = Show("show-after");
        Assert.Multiple(() =>
        {
            Assert.That(Result("receiver-start"), Does.EndWith("exit=0\n"), "systemctl enable --now " + Receiver);
            Assert.That(Result("shim-start"), Does.EndWith("exit=0\n"), "systemctl enable --now " + Shim);
            foreach (var u in new[] { Receiver, Shim })
            {
                Assert.That(before[u]["ActiveState"] + "/" + before[u]["SubState"], Is.EqualTo("active/running"), u + " before the migration");
                Assert.That(after[u]["ActiveState"] + "/" + after[u]["SubState"], Is.EqualTo("active/running"), u + " after the migration");
                Assert.That(after[u]["NRestarts"], Is.EqualTo("0"), u + " never restarted");
                Assert.That(after[u]["MainPID"], Is.EqualTo(before[u]["MainPID"]), u + " same main process");
            }
        });
    }

    [Test]
    public void Each_main_process_runs_in_the_units_sandbox()
    {
        // what the kernel says about the running processes: the unit's user, no capabilities,
        // no_new_privs, a seccomp filter, a mount namespace of its own; the receiver's PrivateUsers=
        var s = Result("sandbox");
        TestContext.Out.WriteLine(s);
        var sections = Regex.Split(s, @"(?m)^== ").Where(x => x.Length > 0).ToDictionary(x => x[..x.IndexOf(' ')], x => x);
        Assert.Multiple(() =>
        {
            foreach (var (u, comm) in new[] { (Receiver, "blockmigrate"), (Shim, "nbdkit") })
            {
                Assert.That(sections.ContainsKey(u), Is.True, u + " in\n" + s);
                var x = sections.GetValueOrDefault(u) ?? "";
                Assert.That(x, Does.Contain($"comm={comm}"), u);
                Assert.That(x, Does.Match(@"Uid:\s+([1-9]\d*)\s+\1\s+\1\s+\1"), u + " runs as a system user, not root");
                Assert.That(x, Does.Match(@"CapEff:\s+0+\n"), u + " has no capabilities");
                Assert.That(x, Does.Match(@"CapBnd:\s+0+\n"), u + " CapabilityBoundingSet= (empty)");
                Assert.That(x, Does.Match(@"NoNewPrivs:\s+1"), u);
                Assert.That(x, Does.Match(@"Seccomp:\s+2"), u + " SystemCallFilter=");
                Assert.That(x, Does.Contain("mnt_ns_differs: yes"), u + " ProtectSystem=/PrivateTmp= give it its own mount namespace");
            }
            // PrivateUsers=yes: root and the service user mapped, nothing else (not the full 0..2^32 map)
            Assert.That(sections.GetValueOrDefault(Receiver) ?? "", Does.Match(@"uid_map: (0 0 1;(\d+) \2 1;|(\d+) \3 1;0 0 1;)\n"), "PrivateUsers=yes");
            Assert.That(sections.GetValueOrDefault(Shim) ?? "", Does.Contain("uid_map: 0 0 4294967295;\n"), "the shim: no PrivateUsers=");
        });
    }

    [Test]
    public void Shim_socket_and_map_have_the_modes_SECURITY_md_promises()
    {
        var modes = Result("modes");
        Assert.Multiple(() =>
        {
            Assert.That(modes, Does.Contain($"blockmigrate:{QemuGroup} 660 socket /run/blockmigrate/{Disk}.sock"), modes);
            Assert.That(modes, Does.Contain($"blockmigrate:blockmigrate 600 regular file /dev/shm/blockmigrate/{Disk}.map"), modes);
            Assert.That(modes, Does.Contain("blockmigrate:blockmigrate 700 directory /dev/shm/blockmigrate"), modes);
            Assert.That(modes, Does.Contain("blockmigrate:blockmigrate 755 directory /run/blockmigrate"), modes);
        });
    }

    [Test]
    public void A_disk_migrated_from_the_host_lands_in_the_guest_intact()
    {
        Assert.That(migrate, Is.Not.Null, "migrate ran");
        Assert.That(migrate!.ExitCode, Is.Zero, migrate.ToString());
        using var report = JsonDocument.Parse(migrate.Stdout);
        TestContext.Out.WriteLine(migrate.Stdout);
        Assert.Multiple(() =>
        {
            Assert.That(Result("image-sha256"), Does.StartWith(sourceSha + " "), "the received image is the source image");
            Assert.That(Result("image-state"), Does.Contain("\"committed\""), "the receiver's state file");
        });
    }

    [Test]
    public void The_receivers_journal_shows_the_receive_with_its_priorities()
    {
        var journal = Result($"journal-{Receiver}.txt");
        TestContext.Out.WriteLine(journal);
        Assert.Multiple(() =>
        {
            Assert.That(journal, Does.Contain($"listening on [::]:7420 (TLS 1.3, key {receiverFingerprint})"));
            Assert.That(journal, Does.Contain($"disk {Disk}: receiving {DiskBytes} bytes into /var/lib/blockmigrate/images/{Disk}.img (gated)"),
                "the receiver found the shim's map in /dev/shm/blockmigrate");
            Assert.That(journal, Does.Match($@"(?m)^committed {Disk} from "));
            Assert.That(journal, Does.Not.Contain("failed"));
        });
        // log lines carry syslog priorities (man page): the commit at info (6)
        var committed = JsonLines($"journal-{Receiver}.json").First(j => j.GetProperty("MESSAGE").GetString()!.StartsWith($"committed {Disk} "));
        Assert.That(committed.GetProperty("PRIORITY").GetString(), Is.EqualTo("6"));
    }

    [Test]
    public void Purge_stops_both_running_units()
    {
        var after = Show("show-after-purge");
        Assert.Multiple(() =>
        {
            Assert.That(Result("dpkg-purge"), Does.EndWith("exit=0\n"), Result("dpkg-purge"));
            foreach (var u in new[] { Receiver, Shim })
                Assert.That(after[u]["ActiveState"], Is.EqualTo("inactive"), u + " after the purge");
            Assert.That(Result("processes-after-purge").Trim(), Is.Empty, "no nbdkit or blockmigrate process left");
            Assert.That(Result($"journal-{Receiver}.txt"), Does.Contain("stopping (signal)"), "the receiver stopped on SIGTERM");
            Assert.That(Result($"journal-{Receiver}.txt"), Does.Not.Match("(?m)Main process exited, code=(killed|exited), status=[1-9]"));
        });
    }

    private string Result(string name)
    {
        var path = Path.Combine(results, name);
        return File.Exists(path) ? File.ReadAllText(path) : "";
    }

    /// <summary>"systemctl show" blocks (one per unit, blank-line separated) in the order of the units.</summary>
    private Dictionary<string, Dictionary<string, string>> Show(string name)
    {
        var text = Result(name);
        var blocks = text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.That(blocks, Has.Length.EqualTo(2), name + ":\n" + text);
        var d = new Dictionary<string, Dictionary<string, string>>();
        foreach (var (u, b) in new[] { Receiver, Shim }.Zip(blocks))
            d[u] = b.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.Contains('='))
                .ToDictionary(l => l[..l.IndexOf('=')], l => l[(l.IndexOf('=') + 1)..]);
        return d;
    }

    private IEnumerable<JsonElement> JsonLines(string name) =>
        Result(name).Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.StartsWith('{'))
            .Select(l => JsonDocument.Parse(l).RootElement);

    private static void WriteSource(string path)
    {
        using var f = File.Create(path);
        f.SetLength(DiskBytes);
        var chunk = new byte[1 << 20];
        foreach (var mib in new[] { 0, 1, 2, 3, 16, 17, 30 })
        {
            RandomNumberGenerator.Fill(chunk);
            f.Position = (long)mib << 20;
            f.Write(chunk);
        }
        Array.Fill(chunk, (byte)0xab);
        f.Position = 31L << 20;
        f.Write(chunk, 0, 65536);
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
