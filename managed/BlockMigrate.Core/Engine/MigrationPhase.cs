namespace BlockMigrate.Engine;

public enum MigrationPhase
{
    Connecting,
    BulkCopy,
    DirtyRounds,
    /// <summary>The hypervisor moves memory and device state; disk tracking goes on.</summary>
    Memory,
    Switchover,
    /// <summary>Gate switchover: handed over; the final blocks stream to the destination while the VM resumes there.</summary>
    FinalBlocks,
    Verifying,
    Done,
    Aborting,
}
