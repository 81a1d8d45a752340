namespace BlockMigrate.Protocol;

/// <summary>
/// Per disk: whether the receiver holds a consistent base of that lineage to resume from, and whether a
/// shim in gate mode serves the image (then the destination VM may resume before the final blocks land).
/// <c>ReturnBase</c>: the offer's return claim was accepted: the receiver keeps its image (the hand-over
/// state of that generation) and only the blocks in the source's map are sent. <c>ReturnRefused</c>:
/// why a claim was not accepted (a full copy follows). <c>DiskLineage</c>, <c>Generation</c>: what the
/// receiver will record at the commit (on a resume, what it recorded when the copy began).
/// </summary>
public sealed record DiskAnswer(string Name, bool Resume, bool Gated = false, bool ReturnBase = false, string? ReturnRefused = null,
    string? DiskLineage = null, ulong Generation = 0);
