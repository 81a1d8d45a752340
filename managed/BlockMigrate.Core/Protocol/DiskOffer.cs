namespace BlockMigrate.Protocol;

/// <summary>
/// One disk in <see cref="HelloMessage"/>. <c>Lineage</c> names the copy at the destination that the
/// source's map is relative to (hex, 16 bytes); <c>Resume</c> asks to continue that copy.
/// <c>Finish</c> (with <c>Resume</c>): an earlier run handed the VM over (the destination VM may be
/// running) and died before its last blocks landed; the receiver writes only blocks its gate still
/// holds, never one the destination VM may have written since.
/// <c>Allocated</c> (optional): bytes of whole blocks the source's image holds data in (its holes are
/// sent as zero ranges and take no space): what a fresh copy needs at most for the bulk copy; the
/// receiver refuses an offer whose allocated bytes exceed the free space of its image directory.
/// <para>The return trip (docs/DESIGN.md, "The return trip"): <c>DiskLineage</c> (hex, 16 bytes, random
/// per disk lineage, kept across trips) and <c>Generation</c> (≥ 1) are what both ends record at this
/// migration's hand-over. <c>ReturnBase</c> (optional, less than <c>Generation</c>, never with
/// <c>Resume</c> or <c>Finish</c>) claims that the source's map holds every block written since
/// generation <c>ReturnBase</c> of <c>DiskLineage</c>: a receiver whose image is exactly that
/// generation's hand-over state, untouched since, keeps it and answers <see cref="DiskAnswer.ReturnBase"/>.</para>
/// </summary>
public sealed record DiskOffer(string Name, ulong Size, uint BlockSize, string Lineage, bool Resume, bool Finish = false, ulong? Allocated = null,
    string? DiskLineage = null, ulong Generation = 0, ulong? ReturnBase = null);
