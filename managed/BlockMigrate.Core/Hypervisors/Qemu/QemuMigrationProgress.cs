namespace BlockMigrate.Hypervisors.Qemu;

/// <summary>
/// The memory migration as the source QEMU last reported it (<c>query-migrate</c>): for a status
/// display. Bytes are QEMU's counts (before compression with multifd compression).
/// </summary>
public sealed record QemuMigrationProgress(
    string Status,
    long TransferredBytes,
    long RemainingBytes,
    long TotalBytes,
    long DirtyPagesPerSecond,
    double Mbps,
    DateTimeOffset At);
