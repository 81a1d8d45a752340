namespace BlockMigrate.Verify;

/// <summary>The result of <see cref="ImageComparer.Compare"/>.</summary>
public sealed record Comparison(long SizeA, long SizeB, IReadOnlyList<DiffExtent> Differences, long DifferentBytes)
{
    public bool Equal => SizeA == SizeB && Differences.Count == 0;
}
