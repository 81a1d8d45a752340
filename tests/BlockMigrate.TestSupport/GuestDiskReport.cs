namespace BlockMigrate.TestSupport;

/// <summary>The verdict of <see cref="GuestDisk.Verify"/>: <see cref="MaxSeq"/> is the newest write on the disk.</summary>
public sealed record GuestDiskReport(bool Ok, long MaxSeq, IReadOnlyList<string> Problems)
{
    public override string ToString() =>
        Ok ? $"disk OK up to seq {MaxSeq}" : $"disk BAD (max seq {MaxSeq}): {string.Join("; ", Problems)}";
}
