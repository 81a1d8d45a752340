namespace BlockMigrate.Network;

/// <summary>
/// Keeps a migrated VM reachable (Bradford et al., VEE '07, §3.3): connections opened before the move
/// keep going through a tunnel from the old host, new ones find the new address through DNS.
/// The migration engine calls the steps in order: <see cref="PrepareAsync"/> before the migration starts,
/// <see cref="DivertAsync"/> at the freeze (the source VM has stopped for good), <see cref="RedirectAsync"/>
/// right after switchover, then <see cref="WaitDrainedAndTeardownAsync"/>;
/// <see cref="AbortAsync"/> at any point removes everything the redirector added.
/// Operational failures (a refused DNS update, a tunnel that cannot be built) are recorded in the returned
/// report, never thrown; only cancellation throws. Every step is safe to call again after it ran.
/// </summary>
public interface IRedirector
{
    /// <summary>What this redirector does, e.g. "tunnel+dns", "dns", "none".</summary>
    string Kind { get; }

    /// <summary>The report so far (a snapshot; steps return the newer one).</summary>
    RedirectionReport Report { get; }

    /// <summary>Before the migration: lower the DNS TTL (if configured), build the tunnel links and start
    /// tracking connections to the old address. Nothing changes for traffic yet.</summary>
    Task<RedirectionReport> PrepareAsync(CancellationToken cancellationToken);

    /// <summary>At the freeze, as soon as the source VM has stopped (QEMU's STOP event), not waited for by the
    /// hand-over: route the old address through the tunnel now, so that what clients send while the VM is
    /// being moved waits at the destination (a paused VM's tap queues it) instead of being lost at the stopped source.
    /// Nothing else (no DNS change). If the migration then fails before the hand-over,
    /// <see cref="AbortAsync"/> sends the old address back to the source.</summary>
    Task<RedirectionReport> DivertAsync(CancellationToken cancellationToken);

    /// <summary>Right after switchover (the VM runs at the destination): route the old address through
    /// the tunnel (if <see cref="DivertAsync"/> did not already), then point the VM's name at its new address.</summary>
    Task<RedirectionReport> RedirectAsync(CancellationToken cancellationToken);

    /// <summary>Wait until no connection to the old address remains (or the tunnel timeout passes), then
    /// remove the tunnel and everything that came with it. Returns early, with reason "aborted", if
    /// <see cref="AbortAsync"/> runs meanwhile.</summary>
    Task<RedirectionReport> WaitDrainedAndTeardownAsync(CancellationToken cancellationToken);

    /// <summary>Remove everything this redirector added, now, whatever step it is in. Before switchover it
    /// also restores the DNS TTL that <see cref="PrepareAsync"/> lowered.</summary>
    Task<RedirectionReport> AbortAsync(CancellationToken cancellationToken);
}
