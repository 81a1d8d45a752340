namespace BlockMigrate.Engine;

/// <summary>A migration failed before its hand-over; the source is untouched and may be migrated again (resume).</summary>
public class MigrationException : BlockMigrateException
{
    public MigrationException(string message) : base(message) { }
    public MigrationException(string message, Exception inner) : base(message, inner) { }
}
