namespace BlockMigrate.Bench.Qemu;

/// <summary>
/// How QEMU's memory stream is set up, the same for every method of a row (a method's <c>@defaults</c>
/// or <c>@zstd</c> suffix): the comparison is fair only when the baseline and BlockMigrate move memory
/// alike.
/// </summary>
public enum MemoryMode
{
    /// <summary>QEMU's defaults: one plain stream, no compression.</summary>
    Defaults,

    /// <summary>multifd with one channel and zstd compression (QEMU's <c>multifd-zstd-level</c> default, 1).</summary>
    MultifdZstd,
}

public static class MemoryModes
{
    public static string Label(this MemoryMode m) => m == MemoryMode.Defaults ? "defaults" : "zstd";

    public static MemoryMode Parse(string s) => s switch
    {
        "defaults" => MemoryMode.Defaults,
        "zstd" or "multifd-zstd" => MemoryMode.MultifdZstd,
        _ => throw new ArgumentException($"memory mode '{s}': defaults or zstd"),
    };
}
