using Microsoft.Extensions.Logging;
namespace BlockMigrate.Hypervisors;

/// <summary>
/// The hypervisor's part of a migration: memory and device state. The engine moves the disks and
/// hands the hypervisor a <c>switchover</c> callback; the hypervisor calls it exactly once, when the
/// source VM has stopped for good (QEMU: the <c>pre-switchover</c> pause; Xen: the domain arrived
/// paused) and before the destination VM may run. The callback freezes the disks, sends the final
/// dirty set and returns at the hand-over, the point of no return (gate mode: the destination gate holds
/// every final block, which then lands while the VM runs; commit mode: every final block is written and
/// fsynced); only then does the hypervisor resume the destination VM, and it never resumes the source
/// once the callback has returned.
/// </summary>
public interface IHypervisor : IAsyncDisposable
{
    /// <summary>"qemu", "xen" or "none".</summary>
    string Name { get; }

    /// <summary>One line per step of the hypervisor's migration, with its level (Information for the admin's
    /// steps, Warning, Debug for a failure deliberately ignored); the engine forwards them to its logger
    /// as "NAME: line".</summary>
    event Action<LogLevel, string>? Log
    {
        add { }
        remove { }
    }

    /// <summary>
    /// Called before <see cref="MigrateAsync"/> when the disk copy measured the link (bytes per second on
    /// the wire, from a round that waited on the link, not on the disk or CPU): an adapter may pace its
    /// memory copy by it, so that the stream does not pile up in socket buffers the guest then waits for.
    /// </summary>
    void LinkRateMeasured(double bytesPerSecond) { }

    /// <summary>
    /// Called before <see cref="MigrateAsync"/> with the engine's own byte counter (bytes it has written to the
    /// link, monotonic, any thread): the disks' rounds share the link with the memory stream, and an adapter
    /// pacing its stream by the link leaves them their share.
    /// </summary>
    void SharesLinkWith(Func<long> bytesSent) { }

    /// <summary>
    /// A key made for this migration's memory stream (64 hex digits), which the engine delivers to the
    /// receiver inside the pinned channel before <see cref="PrepareAsync"/>; null when the adapter needs
    /// none (its stream is protected otherwise, or the admin asked for plaintext).
    /// </summary>
    string? MemoryKey => null;

    /// <summary>The directory on the destination host where the receiver wrote <see cref="MemoryKey"/> (QEMU's <c>keys.psk</c>).</summary>
    void MemoryKeyDelivered(string destinationDirectory) { }

    /// <summary>
    /// Raised once, as soon as the adapter learns the source VM stopped for the switchover (QEMU: the STOP event), which
    /// can be well before the switchover callback: QEMU first drains the guest's block requests in flight, and any the
    /// disk throttle holds make the guest's pause longer. The engine lifts the throttle here (the stopped guest issues no
    /// new writes; the drained ones are in the final set). Adapters that cannot tell never raise it.
    /// </summary>
    event Action? SourceStopped
    {
        add { }
        remove { }
    }

    /// <summary>Checks that the VM runs at the source and that the destination is ready to receive it.</summary>
    Task PrepareAsync(CancellationToken cancellationToken);

    /// <summary>Moves memory and device state, calling <paramref name="switchover"/> once at the switchover point.</summary>
    Task<HypervisorReport> MigrateAsync(Func<CancellationToken, Task> switchover, CancellationToken cancellationToken);

    /// <summary>
    /// A re-run that finished the disks of an earlier hand-over (that process died past the point of no
    /// return): make sure the VM goes on at the destination, doing whatever steps the dead process did
    /// not. Idempotent; a no-op where there is nothing to do.
    /// </summary>
    Task ContinueAfterHandOverAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// Memory bytes this migration has sent so far (QEMU: <c>query-migrate</c>'s <c>ram.transferred</c>;
    /// libvirt: <c>domjobinfo</c>'s <c>memory_processed</c>), read a few times a second for the timeline;
    /// null before the memory copy began or where the hypervisor cannot say (none, xen).
    /// </summary>
    Task<long?> MemoryBytesSentAsync(CancellationToken cancellationToken) => Task.FromResult<long?>(null);

    /// <summary>Before the hand-over: cancels what was started and leaves the VM running at the source.</summary>
    Task AbortAsync(CancellationToken cancellationToken);
}
