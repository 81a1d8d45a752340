namespace BlockMigrate.Engine;

public enum MigrationPhase
{
    Connecting,
    BulkCopy,
    DirtyRounds,
    Switchover,
    Verifying,
    Done,
    Aborting,
}
