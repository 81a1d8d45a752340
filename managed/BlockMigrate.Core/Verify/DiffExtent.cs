namespace BlockMigrate.Verify;

/// <summary>A byte range where two images differ (or where one of them has no bytes).</summary>
public readonly record struct DiffExtent(long Offset, long Length);
