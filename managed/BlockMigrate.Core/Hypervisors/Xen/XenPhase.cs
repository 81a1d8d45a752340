namespace BlockMigrate.Hypervisors.Xen;

/// <summary>Where a <see cref="XenHypervisor"/> is in one migration; decides what Abort may do.</summary>
internal enum XenPhase
{
    Idle,
    Prepared,
    /// <summary><c>xl migrate</c> is running (or failed): the source domain may still exist.</summary>
    Migrating,
    /// <summary><c>xl migrate</c> succeeded: the domain is paused at the destination, gone at the source.</summary>
    ArrivedPaused,
    /// <summary>The switchover committed the disks at the destination.</summary>
    Committed,
    Resumed,
    Aborted,
}
