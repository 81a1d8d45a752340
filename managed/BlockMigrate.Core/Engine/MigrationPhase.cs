namespace BlockMigrate.Engine;

public enum MigrationPhase
{
    Connecting,
    BulkCopy,
    DirtyRounds,
    /// <summary>The hypervisor moves memory and device state; disk tracking goes on.</summary>
    Memory,
    Switchover,
    Verifying,
    Done,
    Aborting,
}
