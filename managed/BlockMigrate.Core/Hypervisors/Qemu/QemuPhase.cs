namespace BlockMigrate.Hypervisors.Qemu;

/// <summary>Where a <see cref="QemuHypervisor"/> is in one migration; decides what Abort may do.</summary>
internal enum QemuPhase
{
    /// <summary>Nothing started.</summary>
    Idle,
    /// <summary>Both monitors checked and configured; the destination listens.</summary>
    Prepared,
    /// <summary><c>migrate</c> issued; memory is being copied while the VM runs at the source.</summary>
    Migrating,
    /// <summary>The source is paused in <c>pre-switchover</c> and the switchover callback runs.</summary>
    Switchover,
    /// <summary>The callback returned: the disks committed at the destination. No way back.</summary>
    Committed,
    /// <summary>The destination VM runs.</summary>
    Resumed,
    /// <summary>Aborted: the VM runs at the source.</summary>
    Aborted,
}
