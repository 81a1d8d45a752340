using BlockMigrate.Hypervisors.Libvirt;
using BlockMigrate.Hypervisors.Qemu;
using BlockMigrate.Hypervisors.Xen;

namespace BlockMigrate.Hypervisors;

/// <summary>
/// The hypervisor part of a migration's settings, as the CLI binds them: the kind, and the settings of
/// that kind (the other may stay null). See docs/hypervisors.md for the command-line options.
/// </summary>
public sealed record HypervisorOptions
{
    public HypervisorKind Kind { get; init; } = HypervisorKind.None;
    public QemuOptions? Qemu { get; init; }
    public XenOptions? Xen { get; init; }
    public LibvirtOptions? Libvirt { get; init; }

    /// <summary>Every problem, one line each: the settings of the kind chosen must be there and sound.</summary>
    public IReadOnlyList<string> Validate() => Kind switch
    {
        HypervisorKind.Qemu => Qemu?.Validate() ?? ["--hypervisor qemu without its settings"],
        HypervisorKind.Xen => Xen is null ? ["--hypervisor xen without its settings"] : [],
        HypervisorKind.Libvirt => Libvirt?.Validate() ?? ["--hypervisor libvirt without its settings"],
        _ => [],
    };

    /// <summary>Parses <c>--hypervisor</c>: qemu, kvm (same as qemu), xen or none.</summary>
    public static HypervisorKind ParseKind(string text) => text.Trim().ToLowerInvariant() switch
    {
        "qemu" or "kvm" => HypervisorKind.Qemu,
        "xen" => HypervisorKind.Xen,
        "libvirt" => HypervisorKind.Libvirt,
        "none" or "" => HypervisorKind.None,
        _ => throw new HypervisorException($"unknown hypervisor '{text}': use qemu, libvirt, xen or none"),
    };
}
