namespace BlockMigrate.Hypervisors.Qemu;

// Abort before the commit point: cancel QEMU's migration and make sure the VM runs at the source.
// A cancel from pre-switchover restarts the source VM by itself (QEMU remembers it was running);
// we still check and 'cont' it when it is paused, e.g. when the migration had already completed
// (QEMU's part done, our disks not committed): the destination never ran, so the source copy is
// still the only one. The destination is never resumed here; it stays paused and can be killed.
public sealed partial class QemuHypervisor
{
    public async Task AbortAsync(CancellationToken cancellationToken)
    {
        if (_phase is QemuPhase.Committed or QemuPhase.Resumed)
            throw new HypervisorException(
                "qemu: cannot abort after the commit point: the destination owns the VM (the source must not resume)");
        if (_source == null || _phase is QemuPhase.Idle or QemuPhase.Aborted)
        {
            _phase = QemuPhase.Aborted;
            return;
        }
        var source = _source;
        try
        {
            await source.ExecuteAsync("migrate_cancel", null, cancellationToken);
        }
        catch (QmpException e) when (e.ErrorClass != QmpException.DisconnectedClass)
        {
            // nothing to cancel
        }
        string status;
        while (true)
        {
            status = (string?)(await source.ExecuteObjectAsync("query-migrate", null, cancellationToken))["status"] ?? "none";
            if (status is not ("setup" or "active" or "pre-switchover" or "device" or "cancelling"))
                break;
            await Task.Delay(20, cancellationToken);
        }
        if (status == "completed" && _destination != null && _destination.IsConnected)
        {
            // the destination may have started on its own (no -S): then there are two copies; do not make it worse
            var dst = await StatusAsync(_destination, cancellationToken);
            if (dst == "running")
                throw new HypervisorException(
                    "qemu: the destination QEMU started by itself (it was not started with -S); the source stays stopped. " +
                    "Stop one of them by hand.");
        }
        var run = await StatusAsync(source, cancellationToken);
        if (run != "running")
            await source.ExecuteAsync("cont", null, cancellationToken);
        _phase = QemuPhase.Aborted;
    }
}
