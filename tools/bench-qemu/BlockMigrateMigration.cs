namespace BlockMigrate.Bench.Qemu;

/// <summary>
/// BlockMigrate's side of the comparison: THE ENTRY POINT to wire once the engine is merged.
/// Same hosts, same guest, same link as <see cref="QemuCopyStorageMigration"/>. To wire it:
/// serve the source disk through the shim instead of plain nbdkit (BenchHosts: FilterArgs with a
/// dirty map; the destination with gate=true), start the receiver in the destination namespace,
/// and run the engine with a <c>QemuHypervisor</c> whose options are SourceQmp = hosts.Source.QmpSocket,
/// DestinationQmp = hosts.Destination.QmpSocket, MigrationUri = tcp:DESTINATION:4444; take Total and
/// GuestDowntime from its HypervisorReport (GuestDowntime is STOP→RESUME as measured here), and
/// AutoConverge = hosts.Settings.AutoConverge so both methods move memory alike.
/// </summary>
public sealed class BlockMigrateMigration : IMigrationUnderTest
{
    public string Name => "blockmigrate";

    public Task<(TimeSpan Total, TimeSpan GuestDowntime, TimeSpan? HypervisorDowntime, long MemoryBytes, string Detail)> RunAsync(
        BenchHosts hosts, CancellationToken cancellationToken) =>
        throw new NotSupportedException("BlockMigrate's run is wired when the engine is merged (see BlockMigrateMigration.cs)");
}
