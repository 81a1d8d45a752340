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

    /// <summary>
    /// QEMU post-copy (<c>--postcopy</c>): how long after the memory copy started the source switched to it
    /// (its STOP); null when the memory moved by pre-copy alone.
    /// </summary>
    public TimeSpan? PostcopyAfter { get; init; }

    /// <summary>Post-copy: memory bytes the source sent after the switch (QEMU's <c>ram.postcopy-bytes</c>).</summary>
    public long? PostcopyBytes { get; init; }

    /// <summary>Post-copy: from the destination's RESUME to the source's <c>completed</c>, while the guest ran on pages it still pulled.</summary>
    public TimeSpan? PostcopyTail { get; init; }
}
