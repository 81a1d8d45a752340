namespace BlockMigrate.Engine;

/// <summary>
/// The outcome of a committed migration. <c>Verified</c>: true/false when both sides hashed every image
/// at the freeze (<see cref="MigrationOptions.Verify"/>), null when that was not asked for.
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
    IReadOnlyList<string> Disks);
