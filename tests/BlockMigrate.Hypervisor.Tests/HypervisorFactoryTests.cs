using BlockMigrate.Hypervisors;
using BlockMigrate.Hypervisors.Qemu;
using BlockMigrate.Hypervisors.Xen;

namespace BlockMigrate.Hypervisor.Tests;

[TestFixture]
public sealed class HypervisorFactoryTests
{
    [TestCase("qemu", HypervisorKind.Qemu)]
    [TestCase("KVM", HypervisorKind.Qemu)]
    [TestCase("xen", HypervisorKind.Xen)]
    [TestCase("none", HypervisorKind.None)]
    public void Hypervisor_option_names_the_kind(string text, HypervisorKind kind) =>
        Assert.That(HypervisorOptions.ParseKind(text), Is.EqualTo(kind));

    [Test]
    public void Unknown_hypervisor_is_refused_with_the_choices() =>
        Assert.That(() => HypervisorOptions.ParseKind("vmware"), Throws.TypeOf<HypervisorException>().With.Message.Contains("qemu, libvirt, xen or none"));

    [Test]
    public void Each_kind_makes_its_adapter()
    {
        Assert.That(HypervisorFactory.Create(new HypervisorOptions()), Is.InstanceOf<NoneHypervisor>());
        Assert.That(HypervisorFactory.Create(new HypervisorOptions
        {
            Kind = HypervisorKind.Qemu,
            Qemu = new QemuOptions { SourceQmp = "/s", DestinationQmp = "/d", MigrationUri = "tcp:h:4444" },
        }), Is.InstanceOf<QemuHypervisor>());
        Assert.That(HypervisorFactory.Create(new HypervisorOptions
        {
            Kind = HypervisorKind.Xen,
            Xen = new XenOptions { Domain = "vm1", DestinationHost = "h" },
        }), Is.InstanceOf<XenHypervisor>());
    }

    [Test]
    public void A_kind_without_its_settings_names_the_missing_options()
    {
        Assert.That(() => HypervisorFactory.Create(new HypervisorOptions { Kind = HypervisorKind.Qemu }),
            Throws.TypeOf<HypervisorException>().With.Message.Contains("--qmp-source"));
        Assert.That(() => HypervisorFactory.Create(new HypervisorOptions { Kind = HypervisorKind.Xen }),
            Throws.TypeOf<HypervisorException>().With.Message.Contains("--xen-domain"));
    }

    [Test]
    public void Remote_xl_commands_use_the_same_ssh_as_xl_migrate()
    {
        Assert.That(new XenOptions { Domain = "vm1", DestinationHost = "h" }.Remote, Is.EqualTo(new[] { "ssh", "h" }));
        Assert.That(new XenOptions { Domain = "vm1", DestinationHost = "h", SshCommand = "ssh -p 2222" }.Remote,
            Is.EqualTo(new[] { "ssh", "-p", "2222", "h" }));
        Assert.That(new XenOptions { Domain = "vm1", DestinationHost = "h", SshCommand = "ssh", RemoteCommand = ["rsh", "x"] }.Remote,
            Is.EqualTo(new[] { "rsh", "x" }));
    }

    [TestCase("lz4", 2, "tcp:h:4444", "compression")]
    [TestCase("zstd", 0, "tcp:h:4444", "channels")]
    [TestCase("zstd", 2, "h:4444", "tcp:HOST:PORT")]
    public void Qemu_settings_QEMU_would_refuse_are_refused_up_front(string compression, int channels, string uri, string says)
    {
        var o = new QemuOptions
        {
            SourceQmp = "/s", DestinationQmp = "/d", MigrationUri = uri, MultifdCompression = compression, MultifdChannels = channels,
        };
        Assert.That(() => new QemuHypervisor(o), Throws.TypeOf<HypervisorException>().With.Message.Contains(says));
    }
}
