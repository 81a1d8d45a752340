namespace BlockMigrate.Engine;

/// <summary>
/// Something failed after the hand-over: the destination owns the disks and the source must not
/// resume them; nothing is rolled back. The CLI exits 3 for it.
/// </summary>
public sealed class AfterHandOverException(string message, Exception inner) : BlockMigrateException(message, inner);
