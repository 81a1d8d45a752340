namespace BlockMigrate.Bench.Qemu;

/// <summary>
/// One way to move the benchmark guest with its disk from <see cref="BenchHosts"/>' source to its
/// destination. It starts when the source guest runs and the destination QEMU waits (-incoming defer
/// -S, its empty disk served on <see cref="BenchHosts.DestinationDiskSocket"/>), and ends when the
/// guest runs at the destination. The runner measures the wire and verifies the destination disk.
/// </summary>
public interface IMigrationUnderTest
{
    /// <summary>The method and its memory mode, e.g. <c>blockmigrate@zstd</c>.</summary>
    string Name { get; }

    /// <summary>How the memory stream is set up (the same for both sides of a row).</summary>
    MemoryMode Memory { get; }

    /// <summary>Migrates; returns total time, guest-visible downtime (STOP at source → RESUME at destination), details.</summary>
    Task<MethodOutcome> RunAsync(BenchHosts hosts, CancellationToken cancellationToken);
}

/// <summary>
/// What a method measured itself. <see cref="ThrottledSeconds"/> and <see cref="WritesDelayedSeconds"/>
/// are BlockMigrate's report fields <c>throttled_seconds</c> and <c>writes_delayed_seconds</c>;
/// <see cref="ThrottleFloorMiBps"/> the lowest cap its log announced ("throttle: guest writes capped
/// at X/s"); null for the baseline, which has no disk throttle.
/// </summary>
public sealed record MethodOutcome(
    TimeSpan Total,
    TimeSpan GuestDowntime,
    TimeSpan? HypervisorDowntime,
    long MemoryBytes,
    string Detail)
{
    public double? ThrottledSeconds { get; init; }
    public double? WritesDelayedSeconds { get; init; }
    public double? ThrottleFloorMiBps { get; init; }
}
