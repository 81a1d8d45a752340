namespace BlockMigrate.Bench.Qemu;

/// <summary>
/// How QEMU's memory stream is set up, the same for every method of a row (a method's <c>@defaults</c>,
/// <c>@zstd</c> or <c>@postcopy</c> suffix): the comparison is fair only when the baseline and
/// BlockMigrate move memory alike.
/// </summary>
public enum MemoryMode
{
    /// <summary>QEMU's defaults: one plain stream, no compression.</summary>
    Defaults,

    /// <summary>multifd with one channel and zstd compression (QEMU's <c>multifd-zstd-level</c> default, 1).</summary>
    MultifdZstd,

    /// <summary>
    /// Post-copy: <c>postcopy-ram</c> on both QEMUs, one plain stream (no multifd: QEMU 7.2 accepts both
    /// capabilities together but its destination aborted when post-copy started, docs/qemu-ram-check.md),
    /// <c>migrate-start-postcopy</c> once the first pass over memory is done (query-migrate's
    /// <c>dirty-sync-count</c> ≥ 2); the destination runs while the rest of the pages follow.
    /// </summary>
    Postcopy,
}

public static class MemoryModes
{
    public static string Label(this MemoryMode m) => m switch
    {
        MemoryMode.Defaults => "defaults",
        MemoryMode.MultifdZstd => "zstd",
        _ => "postcopy",
    };

    public static MemoryMode Parse(string s) => s switch
    {
        "defaults" => MemoryMode.Defaults,
        "zstd" or "multifd-zstd" => MemoryMode.MultifdZstd,
        "postcopy" => MemoryMode.Postcopy,
        _ => throw new ArgumentException($"memory mode '{s}': defaults, zstd or postcopy"),
    };
}
