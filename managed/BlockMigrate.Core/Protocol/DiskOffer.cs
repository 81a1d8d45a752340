namespace BlockMigrate.Protocol;

/// <summary>
/// One disk in <see cref="HelloMessage"/>. <c>Lineage</c> names the copy at the destination that the
/// source's map is relative to (hex, 16 bytes); <c>Resume</c> asks to continue that copy.
/// </summary>
public sealed record DiskOffer(string Name, ulong Size, uint BlockSize, string Lineage, bool Resume);
