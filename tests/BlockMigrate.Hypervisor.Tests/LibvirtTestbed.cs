using System.Security.Cryptography;
using System.Text.Json;
using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// Two libvirt hosts on one machine (tools/libvirt-testbed-host.sh: a libvirtd + virtlogd in each of two
/// network namespaces joined by a veth, each in its own mount and UTS namespace with its own
/// /run/libvirt, /var/lib/libvirt, /etc/libvirt, host UUID and hostname), and a whole VM set up as an
/// admin would for <c>blockmigrate migrate --hypervisor libvirt</c>:
/// <list type="bullet">
/// <item>source: the guest's image (<see cref="GuestBlocks"/> blocks written by the sequence-numbered
/// writer of tools/guest/init, then <see cref="FillBytes"/> of random data) served by the source shim;
/// a transient TCG domain on libvirt A whose disk is that shim's NBD unix socket.</item>
/// <item>destination: <c>blockmigrate receive --once</c> in namespace B writing IMAGEDIR/vda.img and
/// gating through GATEDIR/vda.map; the destination shim in gate mode on them, on its own socket, which
/// the adapter puts in the domain XML it sends (<c>--destination-socket vda=…</c>).</item>
/// </list>
/// Dispose destroys the domains, then stops every QEMU, libvirtd, virtlogd, shim and CLI process by PID and
/// removes the namespaces.
/// </summary>
public sealed class LibvirtTestbed : IDisposable
{
    public const int GuestBlocks = 4096;
    public const long FillBytes = 16L << 20;
    public const long DiskBytes = GuestBlocks * (long)GuestDisk.BlockSize + FillBytes;
    public const string Domain = "bmvm";

    private readonly List<IDisposable> _owned = [];
    private readonly List<BackgroundProcess> _daemons = [];

    private LibvirtTestbed(TempDir dir, NamespacePair net)
    {
        Dir = dir;
        Net = net;
        Keys = new KeyPair(dir.Path);
    }

    public TempDir Dir { get; }
    public NamespacePair Net { get; }
    public KeyPair Keys { get; }
    public string SourceUri => $"qemu+tcp://{Net.SourceAddress}/system";
    public string DestinationUri => $"qemu+tcp://{Net.DestinationAddress}/system";
    public string SourceImage => Dir["src.img"];
    public string SourceMap => Dir["src.map"];
    public string ImageDir => Dir["dst"];
    public string GateDir => Dir["gates"];
    public string DestinationImage => Path.Combine(ImageDir, "vda.img");
    public string DestinationMap => Path.Combine(GateDir, "vda.map");
    public string SerialPath => Dir["serial.log"];
    public SerialLog Serial => new(SerialPath);
    public NbdkitServer SourceShim { get; private set; } = null!;
    public NbdkitServer DestinationShim { get; private set; } = null!;

    /// <summary>
    /// Both libvirt hosts up, the images and shims. <paramref name="adopt"/>: the guest starts on a local
    /// file (<see cref="OriginalImage"/>: raw, or a qcow2 over <see cref="BaseImage"/> that holds the random
    /// fill) and the source shim serves a blank image of the same format (a preallocated qcow2 over the
    /// same base), for <c>blockmigrate adopt</c>.
    /// </summary>
    /// <param name="rate">tbf rate of the veth between the hosts (both ends), e.g. "100mbit"; null = unshaped.</param>
    public static async Task<LibvirtTestbed> StartAsync(string tag, string? adopt = null, string? rate = null)
    {
        var dir = new TempDir("lv-" + tag);
        NamespacePair? net = null;
        try
        {
            net = await NamespacePair.CreateAsync("lv" + tag, rate: rate);
            var bed = new LibvirtTestbed(dir, net);
            try
            {
                await bed.StartHostsAsync();
                await bed.SetUpDisksAsync(adopt);
                return bed;
            }
            catch
            {
                bed.Dispose();
                throw;
            }
        }
        catch
        {
            net?.Dispose();
            dir.Dispose();
            throw;
        }
    }

    private async Task StartHostsAsync()
    {
        var script = Path.Combine(Repo.Root, "tools", "libvirt-testbed-host.sh");
        foreach (var (ns, ip, name) in new[] { (Net.Source, Net.SourceAddress, "A"), (Net.Destination, Net.DestinationAddress, "B") })
            lock (_daemons) _daemons.Add(new BackgroundProcess("bash", [script, ns, ip, Dir[name]]));
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        foreach (var uri in new[] { SourceUri, DestinationUri })
            while (true)
            {
                var r = await VirshAsync(uri, "hostname");
                if (r.ExitCode == 0) break;
                if (DateTime.UtcNow > deadline)
                    Assert.Fail($"libvirtd at {uri} did not come up: {r.StandardError}\nA: {_daemons[0].Stderr}\nB: {_daemons[1].Stderr}");
                await Task.Delay(200);
            }
    }

    public string OriginalImage => Dir["orig.img"];
    public string BaseImage => Dir["base.qcow2"];

    private async Task SetUpDisksAsync(string? adopt)
    {
        using (var f = File.Create(adopt == null ? SourceImage : adopt == "raw" ? OriginalImage : Dir["base.raw"]))
        {
            f.SetLength(DiskBytes);
            f.Position = DiskBytes - FillBytes;
            var chunk = new byte[1 << 20];
            for (long done = 0; done < FillBytes; done += chunk.Length)
            {
                RandomNumberGenerator.Fill(chunk);
                f.Write(chunk);
            }
        }
        if (adopt == "raw")
            await Tool.CheckAsync("truncate", ["-s", $"{DiskBytes}", SourceImage]);
        else if (adopt == "qcow2")
        {
            await Tool.CheckAsync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", Dir["base.raw"], BaseImage]);
            File.Delete(Dir["base.raw"]);
            await Tool.CheckAsync("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", BaseImage, OriginalImage]);
            // an NBD export cannot grow: the qcow2 the shim serves has its metadata preallocated (extended L2 with a backing file)
            await Tool.CheckAsync("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", BaseImage,
                "-o", "extended_l2=on,preallocation=metadata", SourceImage, $"{DiskBytes}"]);
        }
        Directory.CreateDirectory(ImageDir);
        Directory.CreateDirectory(GateDir);
        var size = new FileInfo(SourceImage).Length;
        await Tool.CheckAsync("truncate", ["-s", $"{size}", DestinationImage]);
        using (var gate = DirtyMap.Create(DestinationMap, (ulong)size, 4096))
            gate.SetState(MapState.Gate);
        SourceShim = Own(NbdkitServer.Start(Dir.Path, NbdkitServer.FilterArgs(SourceImage, SourceMap)));
        DestinationShim = Own(NbdkitServer.Start(Dir.Path, NbdkitServer.FilterArgs(DestinationImage, DestinationMap, gate: true)));
    }

    /// <summary>The domain XML of the test guest on a disk (the source shim's socket by default).</summary>
    public string DomainXml(string? diskXml = null, int memoryMiB = 96) => $"""
        <domain type='qemu'><name>{Domain}</name><memory unit='MiB'>{memoryMiB}</memory><vcpu>1</vcpu>
          <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{GuestImage.Kernel}</kernel><initrd>{GuestImage.Initrd}</initrd>
            <cmdline>console=ttyS0 quiet panic=-1 nblk={GuestBlocks} every=50</cmdline></os>
          <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
          <devices>
            {diskXml ?? ShimDiskXml(SourceShim.Socket)}
            <serial type='file'><source path='{SerialPath}' append='on'/></serial>
          </devices></domain>
        """;

    public static string ShimDiskXml(string socket, string format = "raw") => $"""
        <disk type='network' device='disk'><driver name='qemu' type='{format}' cache='none'/>
              <source protocol='nbd'><host transport='unix' socket='{socket}'/></source><target dev='vda' bus='virtio'/></disk>
        """;

    /// <summary>Starts the domain at the source (transient, or defined and started) and waits for the guest to write.</summary>
    public async Task StartGuestAsync(string? diskXml = null, bool persistent = false)
    {
        var xml = Dir["domain.xml"];
        await File.WriteAllTextAsync(xml, DomainXml(diskXml));
        if (persistent)
        {
            await VirshCheckAsync(SourceUri, "define", xml);
            await VirshCheckAsync(SourceUri, "start", Domain);
        }
        else await VirshCheckAsync(SourceUri, "create", xml);
        await Serial.WaitForAsync(@"PROGRESS seq=100\b", TimeSpan.FromSeconds(120));
    }

    /// <summary>virsh on one of the hosts (run in the source namespace, which reaches both).</summary>
    public async Task<CliWrap.Buffered.BufferedCommandResult> VirshAsync(string uri, params string[] args) =>
        await Tool.RunAsync("ip", new[] { "netns", "exec", Net.Source, "virsh", "-c", uri }.Concat(args));

    public async Task<string> VirshCheckAsync(string uri, params string[] args)
    {
        var r = await VirshAsync(uri, args);
        Assert.That(r.ExitCode, Is.Zero, $"virsh -c {uri} {string.Join(' ', args)}: {r.StandardError}");
        return r.StandardOutput;
    }

    /// <summary><c>virsh domstate</c>, or "absent".</summary>
    public async Task<string> StateAsync(string uri)
    {
        var r = await VirshAsync(uri, "domstate", Domain);
        return r.ExitCode == 0 ? r.StandardOutput.Trim() : "absent";
    }

    /// <summary>The domain's names defined (persistent) on a host.</summary>
    public async Task<string[]> DefinedAsync(string uri) =>
        (await VirshCheckAsync(uri, "list", "--all", "--persistent", "--name")).Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    public async Task<(BackgroundProcess Receiver, string Address)> StartReceiverAsync()
    {
        var p = Own(BackgroundProcess.CliIn(Net.Destination, "receive", "--listen", $"{Net.DestinationAddress}:0", "--image-dir", ImageDir,
            "--once", "--gate-map-dir", GateDir, "--key", Keys.ReceiverKey, "--trusted", Keys.Trusted));
        var m = await p.WaitForLineAsync(@"^listening on [^\s]+:(\d+)$", TimeSpan.FromSeconds(30));
        return (p, $"{Net.DestinationAddress}:{m.Groups[1].Value}");
    }

    /// <summary>
    /// The shim's disk files as the package lays them out (<c>/etc/blockmigrate/disks/NAME.conf</c>, here in the
    /// test's directory): disk vda is the source shim's image, map and socket.
    /// </summary>
    public string DiskConfigDir
    {
        get
        {
            var dir = Dir["disks.d"];
            if (!Directory.Exists(dir))
            {
                Directory.CreateDirectory(dir); // 0755 under the usual umask: the shim disk files' directory must not be writable by others
                File.WriteAllText(Path.Combine(dir, "vda.conf"),
                    $"# as blockmigrate-shim@vda reads it\nIMAGE={SourceImage}\nQEMU_GROUP=root\nSOCKET=\"{SourceShim.Socket}\"\nDIRTYMAP={SourceMap}\n");
            }
            return dir;
        }
    }

    /// <summary>
    /// <c>blockmigrate migrate --hypervisor libvirt</c> in the source namespace, as an admin types it: the disks
    /// come from the domain's XML and the shim's disk files (<see cref="DiskConfigDir"/>), no <c>--disk</c>.
    /// </summary>
    public BackgroundProcess StartMigrate(string to, params string[] extra) =>
        StartMigrateWith(["--disk-config-dir", DiskConfigDir], to, extra);

    /// <summary>The same with the disk named explicitly (<c>--disk vda=IMAGE:MAP</c>).</summary>
    public BackgroundProcess StartMigrateWithDisk(string to, params string[] extra) =>
        StartMigrateWith(["--disk", $"vda={SourceImage}:{SourceMap}"], to, extra);

    private BackgroundProcess StartMigrateWith(string[] disks, string to, string[] extra)
    {
        var args = new List<string>(disks)
        {
            "--to", to, "--key", Keys.SourceKey,
            "--peer-fingerprint", Keys.ReceiverFingerprint, "--json", "--timeout", "200",
            "--hypervisor", "libvirt", "--domain", Domain, "--connect", SourceUri, "--destination-connect", DestinationUri,
            "--destination-socket", $"vda={DestinationShim.Socket}",
        };
        args.AddRange(extra);
        args.Insert(0, "migrate");
        return Own(BackgroundProcess.CliIn(Net.Source, args.ToArray()));
    }

    public static JsonElement Report(BackgroundProcess migrate) => JsonDocument.Parse(migrate.Stdout).RootElement;

    /// <summary>The guest's view of an image (a qcow2 read through its backing file) as a raw file, for <see cref="GuestDisk.Verify"/>.</summary>
    public async Task<string> RawViewAsync(string image, string format)
    {
        if (format == "raw") return image;
        var raw = image + ".raw";
        await Tool.CheckAsync("qemu-img", ["convert", "-U", "-f", "qcow2", "-O", "raw", image, raw]);
        return raw;
    }

    public static bool FillMatches(string a, string b)
    {
        static byte[] Hash(string path)
        {
            using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            f.Position = DiskBytes - FillBytes;
            return SHA256.HashData(f);
        }
        return Hash(a).AsSpan().SequenceEqual(Hash(b));
    }

    public T Own<T>(T d) where T : IDisposable
    {
        lock (_owned) _owned.Add(d);
        return d;
    }

    public void Dispose()
    {
        // domains first (libvirtd leaves its QEMUs running when it stops), then every process by PID
        foreach (var uri in new[] { SourceUri, DestinationUri })
            try { VirshAsync(uri, "destroy", Domain).Wait(TimeSpan.FromSeconds(20)); } catch (Exception) { }
        foreach (var host in new[] { "A", "B" })
        {
            var qemu = Path.Combine(Dir[host], "run", "qemu");
            if (Directory.Exists(qemu))
                foreach (var pidFile in Directory.GetFiles(qemu, "*.pid"))
                    KillPidFile(pidFile);
        }
        lock (_owned)
        {
            for (var i = _owned.Count - 1; i >= 0; i--)
            {
                try { _owned[i].Dispose(); }
                catch (Exception e) { TestContext.Out.WriteLine($"teardown: {e.Message}"); }
            }
            _owned.Clear();
        }
        lock (_daemons)
        {
            foreach (var d in _daemons) d.Dispose();
            _daemons.Clear();
        }
        foreach (var host in new[] { "A", "B" })
            KillPidFile(Path.Combine(Dir[host], "virtlogd.pid"));
        Net.Dispose();
        try { File.Delete(SourceMap + ".outstanding"); } catch (IOException) { }
        Dir.Dispose();
    }

    private static void KillPidFile(string pidFile)
    {
        try
        {
            if (!File.Exists(pidFile) || !int.TryParse(File.ReadAllText(pidFile).Trim(), out var pid)) return;
            using var p = System.Diagnostics.Process.GetProcessById(pid);
            p.KillAndWait();
        }
        catch (ArgumentException) { } // gone
        catch (InvalidOperationException) { }
    }
}
