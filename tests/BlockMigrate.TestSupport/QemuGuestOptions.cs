namespace BlockMigrate.TestSupport;

/// <summary>How to start one test guest (see <see cref="QemuGuest"/>).</summary>
public sealed record QemuGuestOptions
{
    /// <summary>Names the QEMU and its files in the directory (serial log, QMP sockets).</summary>
    public required string Name { get; init; }

    /// <summary>The NBD server's unix socket that is the guest's disk (/dev/vda).</summary>
    public required string DiskSocket { get; init; }

    /// <summary>A destination: <c>-incoming defer</c> (and <see cref="Paused"/>).</summary>
    public bool Incoming { get; init; }

    /// <summary><c>-S</c>: do not start the CPUs until <c>cont</c>.</summary>
    public bool Paused { get; init; }

    /// <summary>Network namespace to run QEMU in (<c>ip netns exec</c>); null = this one.</summary>
    public string? Namespace { get; init; }

    public int MemoryMiB { get; init; } = 96;

    /// <summary>Blocks the guest writes round-robin (4 KiB each).</summary>
    public int Blocks { get; init; } = 4096;

    /// <summary>More kernel command line (a marker string the guest then holds in its RAM; <c>guestip=</c> for its init, see tools/guest/init).</summary>
    public string? KernelArgs { get; init; }

    /// <summary>A PROGRESS line every this many writes.</summary>
    public int Every { get; init; } = 50;

    /// <summary>More QEMU arguments (e.g. a <c>-netdev</c> and its <c>-device</c>).</summary>
    public IReadOnlyList<string> ExtraArgs { get; init; } = [];
}
