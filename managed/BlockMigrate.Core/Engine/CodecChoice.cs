namespace BlockMigrate.Engine;

/// <summary>Which compression the engine uses for data (<see cref="MigrationOptions.Codec"/>).</summary>
public enum CodecChoice
{
    /// <summary>zstd while the link is the bottleneck (socket rate ≤ 40 MB/s), LZ4 on faster links.</summary>
    Auto,
    Lz4,
    Zstd,
}
