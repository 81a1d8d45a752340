namespace BlockMigrate.Bench.Qemu;

/// <summary>What one migration run measured.</summary>
public sealed record BenchResult(
    string Method,
    int Run,
    TimeSpan Total,
    TimeSpan GuestDowntime,
    TimeSpan? HypervisorDowntime,
    long WireBytes,
    long MemoryBytes,
    bool DiskVerified,
    string Detail)
{
    public MemoryMode Memory { get; init; }
    /// <summary>The physical limit's parts (<see cref="PhysicalLimit"/>) and the limit itself, seconds at the link rate.</summary>
    public long? DiskCompressedBytes { get; init; }
    public long? MemoryCompressedBytes { get; init; }
    public double? LimitSeconds { get; init; }
    /// <summary>The heavy writer's rate at the source, MiB/s: from boot to the migration's start (unthrottled), and during the migration.</summary>
    public (double? Before, double? During) HeavyMiBps { get; init; }
    /// <summary>BlockMigrate's disk throttle (<see cref="MethodOutcome"/>); null for the baseline.</summary>
    public double? ThrottledSeconds { get; init; }
    public double? WritesDelayedSeconds { get; init; }
    public double? ThrottleFloorMiBps { get; init; }
}
