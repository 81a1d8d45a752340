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
    string Detail);
