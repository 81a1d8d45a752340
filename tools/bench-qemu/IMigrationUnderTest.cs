namespace BlockMigrate.Bench.Qemu;

/// <summary>
/// One way to move the benchmark guest with its disk from <see cref="BenchHosts"/>' source to its
/// destination. It starts when the source guest runs and the destination QEMU waits (-incoming defer
/// -S, its empty disk served on <see cref="BenchHosts.DestinationDiskSocket"/>), and ends when the
/// guest runs at the destination. The runner measures the wire and verifies the destination disk.
/// </summary>
public interface IMigrationUnderTest
{
    string Name { get; }

    /// <summary>Migrates; returns total time, guest-visible downtime (STOP at source → RESUME at destination), details.</summary>
    Task<(TimeSpan Total, TimeSpan GuestDowntime, TimeSpan? HypervisorDowntime, long MemoryBytes, string Detail)> RunAsync(
        BenchHosts hosts, CancellationToken cancellationToken);
}
