using System.Globalization;

namespace BlockMigrate.Bench.Qemu;

/// <summary>One benchmark configuration: the link, the guest and its disk.</summary>
public sealed record BenchSettings
{
    /// <summary>tc tbf rate on the veth between the two hosts, e.g. "100mbit"; null = unshaped.</summary>
    public string? Rate { get; init; } = "100mbit";
    /// <summary>
    /// One-way delay added to every migration connection of both methods by tools/wanem.py (the kernel
    /// has no netem); zero = connections go straight to the destination (<see cref="DelayedPath"/>).
    /// </summary>
    public TimeSpan Delay { get; init; } = TimeSpan.FromMilliseconds(25);
    public int Runs { get; init; } = 1;
    public int MemoryMiB { get; init; } = 128;
    /// <summary>Disk size in bytes.</summary>
    public long DiskBytes { get; init; } = 256L << 20;
    /// <summary>Data written to the disk (after the guest's area) before the guest boots.</summary>
    public long FillBytes { get; init; } = 128L << 20;
    /// <summary>What that data is (<see cref="DiskFill"/>).</summary>
    public FillKind FillKind { get; init; } = FillKind.Random;
    /// <summary>Blocks the guest rewrites round-robin (4 KiB each) at the start of the disk.</summary>
    public int GuestBlocks { get; init; } = 4096;
    public string? JsonOut { get; init; }
    /// <summary>Where each BlockMigrate run writes its picture (<c>migrate --timeline DIR/METHOD-RUN.svg</c>); null: none.</summary>
    public string? TimelineDir { get; init; }
    /// <summary>Give up on one migration after this long (reported as a failed run).</summary>
    public TimeSpan RunTimeout { get; init; } = TimeSpan.FromMinutes(15);
    /// <summary>
    /// The heavy writer: MiB of the disk, after the fill, that a second writer in the guest rewrites with
    /// random 1 MiB blocks back to back (tools/guest/init, <c>heavy=</c>); 0 = none.
    /// </summary>
    public int HeavyMiB { get; init; }
    /// <summary>Where the heavy writer's region starts (MiB): the first whole MiB after the guest's blocks and the fill.</summary>
    public long HeavyAtMiB => ((long)GuestBlocks * 4096 + FillBytes + (1L << 20) - 1) >> 20;
    /// <summary>QEMU auto-converge on the source for both methods: without it a 20 Mbit/s memory copy of this guest takes minutes.</summary>
    public bool AutoConverge { get; init; }

    /// <summary><see cref="Rate"/> in bits per second (tc units: kbit, mbit, gbit are powers of 1000), or null when unshaped.</summary>
    public double? RateBitsPerSecond
    {
        get
        {
            if (Rate == null)
                return null;
            var units = new[] { ("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0) };
            foreach (var (suffix, scale) in units)
                if (Rate.EndsWith(suffix, StringComparison.OrdinalIgnoreCase)
                    && double.TryParse(Rate[..^suffix.Length], NumberStyles.Float, CultureInfo.InvariantCulture, out var n))
                    return n * scale;
            throw new ArgumentException($"rate '{Rate}' is not like 100mbit");
        }
    }
}
