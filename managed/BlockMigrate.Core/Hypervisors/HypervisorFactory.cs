using BlockMigrate.Hypervisors.Libvirt;
using BlockMigrate.Hypervisors.Qemu;
using BlockMigrate.Hypervisors.Xen;

namespace BlockMigrate.Hypervisors;

/// <summary>Makes the adapter that <see cref="HypervisorOptions"/> names; says which option is missing.</summary>
public static class HypervisorFactory
{
    public static IHypervisor Create(HypervisorOptions options) => options.Kind switch
    {
        HypervisorKind.None => new NoneHypervisor(),
        HypervisorKind.Qemu => new QemuHypervisor(options.Qemu
            ?? throw new HypervisorException("--hypervisor qemu needs --qmp-source, --qmp-destination and --migration-uri")),
        HypervisorKind.Xen => new XenHypervisor(options.Xen
            ?? throw new HypervisorException("--hypervisor xen needs --xen-domain and --xen-host")),
        HypervisorKind.Libvirt => new LibvirtHypervisor(options.Libvirt
            ?? throw new HypervisorException("--hypervisor libvirt needs --domain and --destination-connect")),
        _ => throw new HypervisorException($"unknown hypervisor kind {options.Kind}"),
    };
}
