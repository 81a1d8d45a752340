using BlockMigrate.Engine;
using BlockMigrate.Hypervisors;
using BlockMigrate.Hypervisors.Libvirt;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// <c>--hypervisor libvirt</c>'s options and the domain XML it reads and rewrites, without a libvirt
/// (the migrations themselves: <see cref="LibvirtMigrationTests"/>).
/// </summary>
[TestFixture, CancelAfter(60_000)]
public sealed class LibvirtOptionsTests
{
    private static readonly string[] Base = ["migrate", "--disk", "vda=/nonexistent.img:/nonexistent.map", "--to", "127.0.0.1:1", "--plaintext",
        "--hypervisor", "libvirt", "--domain", "vm0"];

    private static async Task<string> FailsWithAsync(params string[] args)
    {
        var r = await Tool.BlockMigrateAsync(args);
        Assert.That(r.ExitCode, Is.EqualTo(2), "a usage error: " + r.StandardError);
        var lines = r.StandardError.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(1), "one line: " + r.StandardError);
        return lines[0];
    }

    [Test]
    public void A_tcg_domain_on_qemu_before_9_is_warned_about()
    {
        const string debian12 = "Compiled against library: libvirt 9.0.0\nUsing library: libvirt 9.0.0\nUsing API: QEMU 9.0.0\nRunning hypervisor: QEMU 7.2.22\n";
        Assert.That(LibvirtHypervisor.TcgWarning(debian12), Does.Contain("03bfc2188f").And.Contain("QEMU 7.2"));
        Assert.That(LibvirtHypervisor.TcgWarning(debian12.Replace("QEMU 7.2.22", "QEMU 9.0.0")), Is.Null, "fixed in 9.0");
        Assert.That(LibvirtHypervisor.TcgWarning("Running hypervisor: Xen 4.17.0\n"), Is.Null);
        Assert.That(LibvirtHypervisor.TcgWarning(""), Is.Null, "no version: no claim");
    }

    [Test]
    public async Task The_destination_connection_is_required() =>
        Assert.That(await FailsWithAsync([.. Base, "--memory-plaintext"]), Does.Contain("--destination-connect"));

    [Test]
    public async Task The_memory_stream_protection_must_be_chosen() =>
        Assert.That(await FailsWithAsync([.. Base, "--destination-connect", "qemu+ssh://dst/system"]),
            Does.Contain("say how the memory stream is protected").And.Contain("--memory-tunnelled").And.Contain("--memory-plaintext"));

    [Test]
    public async Task Qemu_only_options_are_refused() =>
        Assert.That(await FailsWithAsync([.. Base, "--destination-connect", "qemu+ssh://dst/system", "--memory-plaintext", "--multifd"]),
            Does.Contain("--multifd does not apply to --hypervisor libvirt"));

    [Test]
    public async Task Libvirt_options_are_refused_for_qemu() =>
        Assert.That(await FailsWithAsync("migrate", "--disk", "vda=/n.img:/n.map", "--to", "127.0.0.1:1", "--plaintext", "--hypervisor", "qemu",
            "--qmp-source", "/s", "--qmp-destination", "/d", "--migration-uri", "tcp:h:1", "--domain", "vm0"),
            Does.Contain("--domain does not apply to --hypervisor qemu"));

    [Test]
    public async Task A_bad_destination_socket_is_refused() =>
        Assert.That(await FailsWithAsync([.. Base, "--destination-connect", "qemu+ssh://dst/system", "--memory-plaintext", "--destination-socket", "vda=relative.sock"]),
            Does.Contain("bad --destination-socket 'vda=relative.sock'"));

    [Test]
    public void A_domain_name_that_is_not_plain_is_refused() =>
        Assert.That(() => new LibvirtHypervisor(new LibvirtOptions { Domain = "-c evil", DestinationConnect = "qemu:///x", MemoryPlaintext = true }),
            Throws.TypeOf<HypervisorException>().With.Message.Contains("not a usable domain name"));

    private const string Xml = """
        <domain type='kvm'><name>vm0</name><devices>
          <disk type='network' device='disk'><driver name='qemu' type='qcow2'/>
            <source protocol='nbd'><host transport='unix' socket='/run/blockmigrate/vm0.sock'/></source>
            <backingStore type='file'><format type='qcow2'/><source file='/var/lib/base.qcow2'/></backingStore>
            <target dev='vda' bus='virtio'/></disk>
          <disk type='file' device='cdrom'><source file='/iso/install.iso'/><target dev='sda' bus='sata'/><readonly/></disk>
          DATA
        </devices></domain>
        """;

    [Test]
    public void Shim_disks_are_found_and_their_sockets_rewritten_for_the_destination()
    {
        var doc = LibvirtDomainXml.Parse(Xml.Replace("DATA", ""));
        var disks = LibvirtDomainXml.ShimDisks(doc, "vm0");
        Assert.That(disks.Select(d => (d.Target, d.Socket, d.Format)), Is.EqualTo(new[] { ("vda", (string?)"/run/blockmigrate/vm0.sock", (string?)"qcow2") }),
            "the read-only CD-ROM is left to libvirt");
        var rewritten = LibvirtDomainXml.WithSockets(doc, new Dictionary<string, string> { ["vda"] = "/run/blockmigrate/vm0-in.sock" });
        Assert.That(rewritten, Does.Contain("socket=\"/run/blockmigrate/vm0-in.sock\"").And.Not.Contain("vm0.sock\""));
        Assert.That(rewritten, Does.Contain("/var/lib/base.qcow2").And.Contain("/iso/install.iso"), "everything else unchanged");
    }

    [Test]
    public void A_writable_disk_not_behind_the_shim_is_named()
    {
        var doc = LibvirtDomainXml.Parse(Xml.Replace("DATA",
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/var/lib/libvirt/images/data.img'/><target dev='vdb' bus='virtio'/></disk>"));
        Assert.That(() => LibvirtDomainXml.ShimDisks(doc, "vm0"), Throws.TypeOf<HypervisorException>().With.Message
            .Contains("disk vdb of domain 'vm0' (file /var/lib/libvirt/images/data.img) is not behind the blockmigrate shim"));
    }

    [Test]
    public void Xml_with_a_dtd_is_refused() =>
        Assert.That(() => LibvirtDomainXml.Parse("<!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><domain>&x;</domain>"),
            Throws.TypeOf<HypervisorException>().With.Message.StartsWith("libvirt: the domain XML does not parse"));

    [Test]
    public void Completed_job_figures_are_read_from_rawstats() =>
        Assert.That((LibvirtHypervisor.Stat("Job type: 3\n\noperation: 4\ndowntime: 303\nmemory_processed: 77212948\n", "downtime"),
                LibvirtHypervisor.Stat("downtime_net: 297\nmemory_processed: 77212948\n", "memory_processed")),
            Is.EqualTo(((long?)303, (long?)77212948)));

    /// <summary>A shim disk file directory as the package lays it out, with <paramref name="files"/> (NAME → text).</summary>
    private static TempDir ConfigDir(params (string Name, string Text)[] files)
    {
        var dir = new TempDir("lvconf");
        foreach (var (name, text) in files) File.WriteAllText(dir[name + ".conf"], text);
        return dir;
    }

    private static IReadOnlyList<LibvirtShimDisk> Resolve(string xml, TempDir conf, params DiskSpec[] given) =>
        LibvirtShimDisks.Resolve(LibvirtDomainXml.Parse(xml), "vm0", LibvirtShimDisks.ReadConfigs(conf.Path), conf.Path, given);

    private static string Nbd(string target, string socket) =>
        $"<disk type='network' device='disk'><driver name='qemu' type='raw'/><source protocol='nbd'><host transport='unix' socket='{socket}'/></source><target dev='{target}' bus='virtio'/></disk>";

    private static string Domain(params string[] disks) => $"<domain type='kvm'><name>vm0</name><devices>{string.Concat(disks)}</devices></domain>";

    [Test]
    public void Disks_are_derived_from_the_domain_xml_and_the_shim_disk_files()
    {
        using var conf = ConfigDir(
            ("vm0", "# the unit's defaults for SOCKET and DIRTYMAP\nIMAGE=/srv/vm0.img\nQEMU_GROUP=kvm\n"),
            ("data", " IMAGE = '/srv/data.img'\n; a comment\nSOCKET=\"/run/bm/data.sock\"\nDIRTYMAP=/dev/shm/bm/data.map\n"),
            ("other", "IMAGE=/srv/other.img\n"));
        var disks = Resolve(Xml.Replace("DATA", Nbd("vdb", "/run/bm/data.sock")), conf);
        Assert.That(disks.Select(d => (d.Target, d.Socket, d.Disk)), Is.EqualTo(new[]
        {
            ("vda", "/run/blockmigrate/vm0.sock", new DiskSpec("vm0", "/srv/vm0.img", "/dev/shm/blockmigrate/vm0.map")),
            ("vdb", "/run/bm/data.sock", new DiskSpec("data", "/srv/data.img", "/dev/shm/bm/data.map")),
        }), "the read-only CD-ROM is not moved; the shim disk 'other' is not this domain's");
    }

    [TestCase("/tmp/vm0.sock", TestName = "A socket outside the shim's directory is refused by disk")]
    [TestCase("/run/blockmigrate/../../tmp/vm0.sock", TestName = "A socket path climbing out of the shim's directory is refused by disk")]
    [TestCase("/run/blockmigrate/vm0.sock/", TestName = "A socket path that is not the shim's exactly is refused by disk")]
    [TestCase("/run/blockmigrate/nobody.sock", TestName = "A socket in the shim's directory that no disk file names is refused by disk")]
    public void Hostile_socket_is_refused_by_disk(string socket)
    {
        using var conf = ConfigDir(("vm0", "IMAGE=/srv/vm0.img\n"));
        Assert.That(() => Resolve(Domain(Nbd("vda", "/run/blockmigrate/vm0.sock"), Nbd("vdb", socket)), conf), Throws.TypeOf<HypervisorException>().With.Message
            .EqualTo($"libvirt: disk vdb of domain 'vm0' (nbd unix socket {socket}) is not a socket of the blockmigrate shim: no shim disk file in {conf.Path} " +
                     $"names it (SOCKET=, default /run/blockmigrate/NAME.sock for {conf.Path}/NAME.conf); serve the disk with blockmigrate-shim@NAME, or name its image and map with --disk"));
    }

    [Test]
    public void A_disk_not_behind_the_shim_is_named_when_disks_are_derived()
    {
        using var conf = ConfigDir(("vm0", "IMAGE=/srv/vm0.img\n"));
        Assert.That(() => Resolve(Domain(Nbd("vda", "/run/blockmigrate/vm0.sock"),
                "<disk type='block' device='disk'><source dev='/dev/vg/data'/><target dev='vdb' bus='virtio'/></disk>"), conf),
            Throws.TypeOf<HypervisorException>().With.Message.StartsWith("libvirt: disk vdb of domain 'vm0' (block /dev/vg/data) is not behind the blockmigrate shim"));
    }

    [Test, System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public void A_shim_disk_file_others_can_write_is_refused_by_name()
    {
        using var conf = ConfigDir(("vm0", "IMAGE=/srv/vm0.img\n"));
        File.SetUnixFileMode(conf["vm0.conf"], UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead | UnixFileMode.OtherWrite);
        Assert.That(() => Resolve(Domain(Nbd("vda", "/run/blockmigrate/vm0.sock")), conf), Throws.TypeOf<HypervisorException>().With.Message
            .StartsWith($"libvirt: disk vda of domain 'vm0' (nbd unix socket /run/blockmigrate/vm0.sock): shim disk file {conf["vm0.conf"]} is writable by group or others"));
    }

    [Test]
    public void A_shim_disk_file_without_an_absolute_image_is_refused_by_name()
    {
        using var conf = ConfigDir(("vm0", "IMAGE=vm0.img\n"));
        Assert.That(() => Resolve(Domain(Nbd("vda", "/run/blockmigrate/vm0.sock")), conf), Throws.TypeOf<HypervisorException>().With.Message
            .Contains($"shim disk file {conf["vm0.conf"]}: IMAGE= is 'vm0.img', not an absolute path"));
    }

    [Test]
    public void Explicit_disks_must_agree_with_the_domain()
    {
        using var conf = ConfigDir(("vm0", "IMAGE=/srv/vm0.img\n"));
        var xml = Domain(Nbd("vda", "/run/blockmigrate/vm0.sock"), Nbd("vdb", "/run/handmade.sock"));
        var vda = new DiskSpec("vm0", "/srv/vm0.img", "/dev/shm/blockmigrate/vm0.map");
        var vdb = new DiskSpec("vdb", "/srv/handmade.img", "/dev/shm/handmade.map");
        Assert.That(Resolve(xml, conf, vdb, vda).Select(d => (d.Target, d.Disk)), Is.EqualTo(new[] { ("vda", vda), ("vdb", vdb) }),
            "by shim disk name or by target; a socket no file names is taken as --disk says");
        Assert.That(() => Resolve(xml, conf, vda with { MapPath = "/tmp/other.map" }, vdb), Throws.TypeOf<HypervisorException>().With.Message
            .EqualTo($"libvirt: --disk vm0=/srv/vm0.img:/tmp/other.map disagrees with disk vda of domain 'vm0' (nbd unix socket /run/blockmigrate/vm0.sock): " +
                     $"its shim serves /srv/vm0.img with the map /dev/shm/blockmigrate/vm0.map ({conf["vm0.conf"]})"));
        Assert.That(() => Resolve(xml, conf, vda), Throws.TypeOf<HypervisorException>().With.Message
            .Contains("disk vdb of domain 'vm0' (nbd unix socket /run/handmade.sock): no --disk names it"));
        Assert.That(() => Resolve(xml, conf, vda, vdb, new DiskSpec("vdc", "/x", "/y")), Throws.TypeOf<HypervisorException>().With.Message
            .StartsWith("libvirt: --disk vdc is not a disk of domain 'vm0' behind the shim"));
    }

    [Test]
    public void A_domain_whose_disks_changed_since_they_were_resolved_is_refused()
    {
        using var conf = ConfigDir(("vm0", "IMAGE=/srv/vm0.img\n"), ("vm1", "IMAGE=/srv/vm1.img\n"));
        var disks = Resolve(Domain(Nbd("vda", "/run/blockmigrate/vm0.sock")), conf);
        Assert.That(() => LibvirtShimDisks.CheckUnchanged(LibvirtDomainXml.Parse(Domain(Nbd("vda", "/run/blockmigrate/vm1.sock"))), "vm0", disks),
            Throws.TypeOf<HypervisorException>().With.Message.Contains("the disks of domain 'vm0' changed"));
    }
}
