namespace BlockMigrate.Hypervisors;

/// <summary>What the hypervisor measured: its own downtime, what the guest saw, memory bytes moved.</summary>
public sealed record HypervisorReport(
    string Hypervisor,
    TimeSpan Total,
    TimeSpan? HypervisorDowntime,
    TimeSpan? GuestDowntime,
    long MemoryBytes)
{
    /// <summary>
    /// The memory stream's bytes on the wire (after compression and TLS, up to the hand-over at least),
    /// where the hypervisor can see them (QEMU over TCP: the kernel's count for its connections); null
    /// elsewhere. <see cref="MemoryBytes"/> is the hypervisor's own count, before compression.
    /// </summary>
    public long? MemoryWireBytes { get; init; }

    /// <summary>How long the switchover callback ran (disk freeze, final dirty set, commit), if measured here.</summary>
    public TimeSpan? Switchover { get; init; }

    /// <summary>When the source VM stopped (QEMU's STOP event, the source host's clock), where the hypervisor reports it.</summary>
    public DateTimeOffset? StoppedAt { get; init; }

    /// <summary>When the destination VM resumed (QEMU's RESUME event, the destination host's clock), where the hypervisor reports it.</summary>
    public DateTimeOffset? ResumedAt { get; init; }
}
