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
}
