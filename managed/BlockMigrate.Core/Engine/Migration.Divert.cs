namespace BlockMigrate.Engine;

/// <summary>
/// The <see cref="SourceStopped"/> hook (the CLI's network redirection: the tunnel takes the VM's old address, so what
/// clients send while the VM moves waits at the destination instead of being lost at the stopped source's tap).
/// <para><b>When it starts.</b> At the hypervisor's own stop signal (<see cref="Hypervisors.IHypervisor.SourceStopped"/>,
/// QEMU's STOP event), which comes 13–56 ms (measured) before QEMU calls the switchover: every packet a client sends in
/// between reaches a tap nobody reads and is lost, and a lost SYN costs TCP's 1 s retransmission. An adapter that does
/// not raise it (Xen, libvirt) gets it at the switchover's start instead. Either way it runs once.</para>
/// <para><b>Why the hand-over does not wait for it.</b> The hand-over moves custody of the disks and of the VM; the
/// divert only moves packets, and no packet can make either side's disk or memory wrong. If the destination VM resumes
/// before the divert is done, what clients send to the old address meanwhile still reaches the stopped source and is
/// lost — as it is before the divert anyway, and TCP resends it. (The VM's replies from the old address go into the
/// tunnel from the start: the destination's reply route is installed at prepare.) The DNS update, which must come after the
/// tunnel (the paper's order), waits for the divert in the redirection itself, not in the engine. Waiting here only
/// made the guest's pause longer: measured, the hand-over came 158–203 ms after STOP with the wait and 31–67 ms without
/// a network redirection. So: the hand-over goes on; a hook whose task has already failed by then fails the
/// migration before the hand-over, exactly as before (the source VM keeps the disks; the CLI's abort gives the old
/// address back); the migration waits for the hook before it reports, and a failure after the hand-over is reported
/// as an <see cref="AfterHandOverException"/>. (The CLI's hook never fails: a tunnel that cannot be switched is an
/// error in the network report, the migration committed, as before.)</para>
/// </summary>
public sealed partial class Migration
{
    private readonly object _divertLock = new();
    private Task? _divert;                  // set once, under _divertLock: by the hypervisor's event thread or the switchover
    private CancellationToken _runToken;    // RunAsync's token (with the timeout), for a divert started by an event

    /// <summary>Handler for <see cref="Hypervisors.IHypervisor.SourceStopped"/>: starts the divert now.</summary>
    private void DivertAtStop() => StartDivert(StartedAtStop);

    private const string StartedAtStop = "stop";

    /// <summary>Calls the hook once (later calls return the same task); it must return at once, and a hook that
    /// throws counts as a divert that failed.</summary>
    private Task StartDivert(string at)
    {
        lock (_divertLock)
        {
            if (_divert is not null) return _divert;
            if (SourceStopped is not { } hook) return _divert = Task.CompletedTask;
            try
            {
                _divert = hook(_runToken) ?? Task.CompletedTask;
            }
            catch (Exception e)
            {
                _divert = Task.FromException(e);
            }
            if (at != StartedAtStop) Say($"the source stopped (no stop event from {_hypervisor.Name}): source-stopped hook started at the switchover");
            return _divert;
        }
    }

    /// <summary>At the hand-over: a divert that has already failed fails the migration (before the hand-over, the
    /// source untouched); one still running is not waited for.</summary>
    private async Task ThrowIfDivertFailedAsync()
    {
        Task? divert;
        lock (_divertLock) divert = _divert;
        if (divert is { IsCompleted: true, IsCompletedSuccessfully: false }) await divert;
    }

    /// <summary>Before the report: the divert has finished (a failure throws, and after the hand-over becomes an
    /// <see cref="AfterHandOverException"/>).</summary>
    private async Task AwaitDivertAsync()
    {
        Task? divert;
        lock (_divertLock) divert = _divert;
        if (divert is not null) await divert;
    }
}
