namespace BlockMigrate.Engine;

/// <summary>Which compression the engine uses for data (<see cref="MigrationOptions.Codec"/>).</summary>
public enum CodecChoice
{
    /// <summary>Starts with zstd; keeps it while the link is the bottleneck (socket rate ≤ 40 MB/s), LZ4 when the CPU or disk is, or on faster links.</summary>
    Auto,
    Lz4,
    Zstd,
}
