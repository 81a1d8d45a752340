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
/// </summary>
public sealed record DiskOffer(string Name, ulong Size, uint BlockSize, string Lineage, bool Resume, bool Finish = false, ulong? Allocated = null);
