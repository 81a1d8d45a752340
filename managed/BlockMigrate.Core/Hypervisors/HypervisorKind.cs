namespace BlockMigrate.Hypervisors;

/// <summary>Which hypervisor adapter a migration uses (<c>--hypervisor qemu|xen|none</c>).</summary>
public enum HypervisorKind
{
    /// <summary>Disk only.</summary>
    None,
    Qemu,
    Xen,
    /// <summary>libvirt's own live migration through virsh.</summary>
    Libvirt,
}
