namespace BlockMigrate.Protocol;

/// <summary>Per disk: whether the receiver holds a consistent base of that lineage to resume from.</summary>
public sealed record DiskAnswer(string Name, bool Resume);
