namespace BlockMigrate.Maps;

/// <summary>A dirty map could not be created, opened or used (the library's own message).</summary>
public sealed class DirtyMapException(string message) : BlockMigrateException(message);
