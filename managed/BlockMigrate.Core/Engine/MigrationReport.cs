namespace BlockMigrate.Engine;

/// <summary>
/// The outcome of a committed migration. <c>Verified</c>: true/false when both sides hashed every image
/// at the freeze (<see cref="MigrationOptions.Verify"/>), null when that was not asked for.
/// <c>DowntimeMs</c> is the disks' own downtime (from the switchover's start, the VM stopped, through
/// the freeze to the hand-over: in gate mode the final set gated at the destination, in commit mode the commit); what the guest saw and the memory figures are
/// the hypervisor's, in <see cref="HypervisorDetails"/>.
/// </summary>
public sealed record MigrationReport(
    double TotalSeconds,
    double DowntimeMs,
    long BytesOnWire,
    long BytesOnWireAfterBulk,
    long BytesOfData,
    long BytesZero,
    long BytesToSend,
    int Rounds,
    double ThrottledSeconds,
    double WritesDelayedSeconds,
    bool? Verified,
    bool Resumed,
    long FrozenAtUnixMs,
    long FinalBlocks,
    string Hypervisor,
    IReadOnlyList<string> Disks)
{
    /// <summary>What the hypervisor measured (its downtime, the guest's, memory bytes); null only if it reported nothing.</summary>
    public Hypervisors.HypervisorReport? HypervisorDetails { get; init; }

    /// <summary>When the destination VM was let resume: at the gate or at the commit (for a re-run that
    /// finished an earlier hand-over, see <see cref="FinishedHandOver"/>).</summary>
    public SwitchoverMode Switchover { get; init; } = SwitchoverMode.Commit;

    /// <summary>This run finished an earlier run's hand-over (whose final blocks had not all landed).</summary>
    public bool FinishedHandOver { get; init; }

    /// <summary>"gate", "commit", or "finish": the report's <c>switchover</c> field.</summary>
    public string SwitchoverName => FinishedHandOver ? "finish" : Switchover == SwitchoverMode.Gate ? "gate" : "commit";

    /// <summary>
    /// Data bytes (before compression) sent with each codec of <see cref="Protocol.BlockCodec.All"/>, by its name
    /// (every row present); the rest went raw.
    /// </summary>
    public IReadOnlyDictionary<string, long> BytesByCodec { get; init; } = new Dictionary<string, long>();

    /// <summary>The bytes sent with <paramref name="codec"/> (0 if none).</summary>
    public long BytesWith(Protocol.BlockCodec codec) => BytesByCodec.GetValueOrDefault(codec.Name);

    /// <summary>The migration over time (<see cref="MigrationOptions.RecordTimeline"/>), else null.</summary>
    public Timeline? Timeline { get; init; }

    /// <summary>Blocks the receiver wrote from its seed images (or from blocks it had received) instead of receiving them (report field <c>blocks_from_seeds</c>).</summary>
    public long BlocksFromSeeds { get; init; }

    /// <summary>Blocks sent as data frames carrying bytes, every round (zero ranges not counted) (<c>blocks_sent</c>).</summary>
    public long BlocksSent { get; init; }

    /// <summary>
    /// Blocks a round before the switchover did not read because the guest had written them again since
    /// they were taken: a later round sent them (<c>blocks_deferred</c>; <see cref="FrameProducer"/>).
    /// </summary>
    public long BlocksDeferred { get; init; }

    /// <summary>Bytes of the hash exchange on the wire, both ways (<c>seed_exchange_bytes</c>); 0 when the receiver had no seeds.</summary>
    public long SeedExchangeBytes { get; init; }

    /// <summary>The return trip: blocks the receiver kept from its return base instead of receiving them (0: none).</summary>
    public long ReturnBaseBlocks { get; init; }

    /// <summary>Freeze to commit (the last final block written and fsynced at the destination).</summary>
    public double? CommitMs { get; init; }

    /// <summary>How hard the guest was throttled: the lowest write cap applied (bytes/s of guest writes); 0 = never
    /// throttled. With <see cref="ThrottledSeconds"/> (how long) and <see cref="WritesDelayedSeconds"/> (what the
    /// guest's writes waited in all).</summary>
    public ulong ThrottleTightestBytesPerSecond { get; init; }

    /// <summary>What the engine predicted for <see cref="DowntimeMs"/> when it decided to switch over (dirty bytes / drain
    /// rate + the fixed cost); null when no round was judged (finishing an earlier hand-over).</summary>
    public double? DowntimeEstimateMs { get; init; }
}
