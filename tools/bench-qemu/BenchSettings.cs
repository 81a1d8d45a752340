namespace BlockMigrate.Bench.Qemu;

/// <summary>One benchmark configuration: the link, the guest and its disk.</summary>
public sealed record BenchSettings
{
    /// <summary>tc tbf rate on the veth between the two hosts, e.g. "100mbit"; null = unshaped.</summary>
    public string? Rate { get; init; } = "100mbit";
    public int Runs { get; init; } = 1;
    public int MemoryMiB { get; init; } = 128;
    /// <summary>Disk size in bytes.</summary>
    public long DiskBytes { get; init; } = 256L << 20;
    /// <summary>Random data written to the disk (after the guest's area) before the guest boots.</summary>
    public long FillBytes { get; init; } = 128L << 20;
    /// <summary>Blocks the guest rewrites round-robin (4 KiB each) at the start of the disk.</summary>
    public int GuestBlocks { get; init; } = 4096;
    public string? JsonOut { get; init; }
    /// <summary>QEMU auto-converge on the source for both methods: without it a 20 Mbit/s memory copy of this guest takes minutes.</summary>
    public bool AutoConverge { get; init; }
}
