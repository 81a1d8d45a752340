namespace BlockMigrate.Hypervisors.Xen;

// Abort before the hand-over, within what xl allows:
//  - xl migrate failed or was interrupted: xl resumes the domain at the source itself when it fails
//    before its point of no return; we unpause it if it is left paused, and destroy a half-built
//    DOMAIN--incoming at the destination (only while the source domain exists).
//  - xl migrate succeeded: the source domain is gone and the VM's only memory image is the paused
//    domain at the destination. Destroying it would lose the VM, so we leave it and explain.
public sealed partial class XenHypervisor
{
    public async Task AbortAsync(CancellationToken cancellationToken)
    {
        switch (_phase)
        {
            case XenPhase.Idle or XenPhase.Prepared or XenPhase.Aborted:
                _phase = XenPhase.Aborted;
                return;
            case XenPhase.Committed or XenPhase.Resumed:
                throw new HypervisorException(
                    "xen: cannot abort after the hand-over: the destination owns the domain (the source must not resume)");
            case XenPhase.ArrivedPaused:
                throw new HypervisorException(
                    $"xen: xl migrate had already handed '{Domain}' over: it no longer exists here and waits PAUSED on " +
                    $"{_options.DestinationHost}; it was not destroyed (that would lose the VM). Its disk here is intact as " +
                    "of the freeze. Either finish the disk copy and run 'xl unpause " + Domain + "' there, or thaw the source " +
                    "shim and migrate it back from there ('xl migrate " + Domain + " THIS-HOST'), then unpause it here.");
        }

        // Migrating: xl migrate failed or was interrupted
        var here = await ListAsync(remote: false, Domain, cancellationToken);
        if (here == null)
        {
            var there = await ListAsync(remote: true, Domain, cancellationToken);
            throw new HypervisorException(there != null
                ? $"xen: '{Domain}' is gone here and exists on {_options.DestinationHost} (state {there.Flags}) after an interrupted xl migrate; it was left as is: check both hosts and resume at most one copy"
                : $"xen: '{Domain}' exists on neither host after an interrupted xl migrate; check 'xl list' on both");
        }
        var incoming = Domain + "--incoming";
        if (await ListAsync(remote: true, incoming, cancellationToken) != null)
            await RunCheckedAsync(remote: true, ["destroy", incoming], cancellationToken);
        if (here.Suspended)
            throw new HypervisorException(
                $"xen: '{Domain}' is left suspended here by the interrupted xl migrate, and xl has no command to resume a " +
                "suspended domain (libxl can, xl does not expose it): restart it from its disk ('xl destroy', then 'xl create')");
        if (here.Paused)
            await RunCheckedAsync(remote: false, ["unpause", Domain], cancellationToken);
        _phase = XenPhase.Aborted;
    }
}
