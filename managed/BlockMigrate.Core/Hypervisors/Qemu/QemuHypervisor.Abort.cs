namespace BlockMigrate.Hypervisors.Qemu;

// Abort before the hand-over: cancel QEMU's migration and make sure the VM runs at the source.
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
                "qemu: cannot abort after the hand-over: the destination owns the VM (the source must not resume)");
        if (_source == null || _phase is QemuPhase.Idle or QemuPhase.Aborted)
        {
            _phase = QemuPhase.Aborted;
            return;
        }
        if (_destination != null && _destination.IsConnected)
        {
            // a QEMU migration that completed but whose disks did not commit: if the destination started
            // on its own (no -S) there are two copies already; do not make it worse by resuming the source
            string dst;
            try
            {
                dst = await StatusAsync(_destination, cancellationToken);
            }
            catch (QmpException e) when (e.ErrorClass == QmpException.DisconnectedClass)
            {
                dst = "gone"; // the destination died: nothing runs there
            }
            if (dst == "running")
                throw new HypervisorException(
                    "qemu: the destination QEMU started by itself (it was not started with -S); the source stays stopped. " +
                    "Stop one of them by hand.");
        }
        await CancelAndResumeSourceAsync(_source, cancellationToken);
        // left on, the capability would make anyone's next migration of this VM wait in pre-switchover
        await SetCapabilitiesAsync(_source, cancellationToken, ("pause-before-switchover", false));
        if (_options.Postcopy) await SetCapabilitiesAsync(_source, cancellationToken, ("postcopy-ram", false));
        if (_memoryKey != null) await DropMemoryTlsAsync(_source, cancellationToken);
        _phase = QemuPhase.Aborted;
    }

    /// <summary>migrate_cancel, wait until the migration has ended, then cont unless the source runs.</summary>
    private static async Task CancelAndResumeSourceAsync(QmpClient source, CancellationToken cancellationToken)
    {
        try
        {
            await source.ExecuteAsync("migrate_cancel", null, cancellationToken);
        }
        catch (QmpException e) when (e.ErrorClass != QmpException.DisconnectedClass)
        {
            // nothing to cancel
        }
        while (true)
        {
            var status = (string?)(await source.ExecuteObjectAsync("query-migrate", null, cancellationToken))["status"] ?? "none";
            if (status is not ("setup" or "active" or "pre-switchover" or "device" or "cancelling"))
                break;
            await Task.Delay(20, cancellationToken);
        }
        if (await StatusAsync(source, cancellationToken) != "running")
            await source.ExecuteAsync("cont", null, cancellationToken);
    }
}
