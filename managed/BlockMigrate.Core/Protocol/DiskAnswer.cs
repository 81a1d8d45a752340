namespace BlockMigrate.Protocol;

/// <summary>
/// Per disk: whether the receiver holds a consistent base of that lineage to resume from, and whether a
/// shim in gate mode serves the image (then the destination VM may resume before the final blocks land).
/// </summary>
public sealed record DiskAnswer(string Name, bool Resume, bool Gated = false);
