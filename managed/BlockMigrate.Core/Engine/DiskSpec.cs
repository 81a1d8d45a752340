namespace BlockMigrate.Engine;

/// <summary>One disk to migrate: its name at the destination, the image file the source reads, and its dirty map.</summary>
public sealed record DiskSpec(string Name, string ImagePath, string MapPath);
