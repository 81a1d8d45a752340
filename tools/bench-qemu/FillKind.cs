namespace BlockMigrate.Bench.Qemu;

/// <summary>What the benchmark disk holds besides the guest's own blocks (<c>--fill-kind</c>).</summary>
public enum FillKind
{
    /// <summary>Random bytes: nothing compresses, the worst case for a method that compresses.</summary>
    Random,

    /// <summary>Real files of the host's /usr, as an installed system's disk holds them.</summary>
    Os,
}
