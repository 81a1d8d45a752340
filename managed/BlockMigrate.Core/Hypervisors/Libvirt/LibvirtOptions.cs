namespace BlockMigrate.Hypervisors.Libvirt;

/// <summary>
/// How to move a libvirt domain (<c>--hypervisor libvirt</c>): libvirt's own live migration, driven
/// through <c>virsh</c> on the source host. See docs/hypervisors.md, "libvirt".
/// </summary>
public sealed record LibvirtOptions
{
    /// <summary>The domain's name (<c>--domain</c>).</summary>
    public required string Domain { get; init; }

    /// <summary>libvirt URI of the source host (<c>--connect</c>); null = virsh's default (<c>qemu:///system</c> as root).</summary>
    public string? Connect { get; init; }

    /// <summary>libvirt URI of the destination host (<c>--destination-connect</c>, e.g. <c>qemu+ssh://dst/system</c>).</summary>
    public required string DestinationConnect { get; init; }

    /// <summary><c>virsh migrate --migrateuri</c> (<c>--migration-uri</c>, e.g. <c>tcp://10.0.0.2</c>): where QEMU sends memory.</summary>
    public string? MigrationUri { get; init; }

    /// <summary>
    /// The destination shim's socket per disk target (<c>--destination-socket vda=/run/vm0-dst.sock</c>);
    /// a target not named keeps the source's socket path (the same path on the destination host).
    /// </summary>
    public IReadOnlyDictionary<string, string> DestinationSockets { get; init; } = new Dictionary<string, string>();

    /// <summary><c>--persistent</c>: define the domain at the destination and undefine it at the source (<c>virsh migrate --persistent --undefinesource</c>).</summary>
    public bool Persistent { get; init; }

    /// <summary><c>--memory-plaintext</c>: QEMU's memory stream in the clear over <see cref="MigrationUri"/> (a trusted link).</summary>
    public bool MemoryPlaintext { get; init; }

    /// <summary><c>--memory-tunnelled</c>: the memory stream inside libvirt's own connection (<c>virsh migrate --p2p --tunnelled</c>), protected as <see cref="DestinationConnect"/> is (ssh, TLS).</summary>
    public bool MemoryTunnelled { get; init; }

    /// <summary><c>--memory-bandwidth</c>: <c>virsh migrate --bandwidth</c> (bytes per second, rounded up to MiB/s).</summary>
    public long? MaxBandwidth { get; init; }

    /// <summary><c>--auto-converge</c>: <c>virsh migrate --auto-converge</c>.</summary>
    public bool AutoConverge { get; init; }

    /// <summary>
    /// Where the shim's disk files are (<c>--disk-config-dir</c>, <c>NAME.conf</c> with <c>IMAGE=</c>, <c>SOCKET=</c>,
    /// <c>DIRTYMAP=</c>): how the disks are found from the domain's sockets (<see cref="LibvirtShimDisks"/>).
    /// </summary>
    public string DiskConfigDir { get; init; } = LibvirtShimDisks.DefaultConfigDir;

    /// <summary>The disks the migration moves, as <see cref="LibvirtShimDisks.ResolveAsync"/> found them; Prepare checks the domain still has exactly these (empty: not checked).</summary>
    public IReadOnlyList<LibvirtShimDisk> ShimDisks { get; init; } = [];

    /// <summary>The virsh executable (<c>--virsh</c>).</summary>
    public string Virsh { get; init; } = "virsh";

    /// <summary>Time allowed for one short virsh command (domstate, dumpxml, resume).</summary>
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromSeconds(60);

    private static readonly System.Text.RegularExpressions.Regex DomainName = new("^[A-Za-z0-9][A-Za-z0-9_.+-]*$");

    /// <summary>Every problem, one line each (the CLI makes them usage errors; the adapter refuses them too).</summary>
    public IReadOnlyList<string> Validate()
    {
        var e = new List<string>();
        if (!DomainName.IsMatch(Domain) || Domain.Length > 200)
            e.Add($"libvirt: '{Domain}' is not a usable domain name (letters, digits, _ . + -)");
        if (MemoryPlaintext && MemoryTunnelled)
            e.Add("libvirt: --memory-plaintext and --memory-tunnelled exclude each other");
        if (!MemoryPlaintext && !MemoryTunnelled)
            e.Add("libvirt: say how the memory stream is protected: --memory-tunnelled (inside the libvirt connection, e.g. qemu+ssh://) " +
                  "or --memory-plaintext (QEMU's stream in the clear: a trusted link only)");
        if (!DiskConfigDir.StartsWith('/'))
            e.Add($"libvirt: --disk-config-dir '{DiskConfigDir}' is not an absolute path");
        if (MemoryTunnelled && MigrationUri != null)
            e.Add("libvirt: --migration-uri does not apply with --memory-tunnelled (the memory goes through the libvirt connection)");
        return e;
    }
}
