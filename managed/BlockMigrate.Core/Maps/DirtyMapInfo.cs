namespace BlockMigrate.Maps;

/// <summary>A snapshot of a map's geometry, state and counters.</summary>
public sealed record DirtyMapInfo(
    uint Version,
    uint BlockSize,
    ulong ImageSize,
    ulong Blocks,
    MapState State,
    ulong ThrottleBytesPerSecond,
    ulong Writes,
    ulong BytesWritten,
    TimeSpan Throttled,
    TimeSpan Frozen,
    TimeSpan Gated,
    ulong WritesInFlight,
    ulong OwnerPid,
    ulong DirtyBlocks,
    ulong GatedBlocks);
