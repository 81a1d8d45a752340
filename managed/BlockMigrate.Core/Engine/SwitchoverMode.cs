namespace BlockMigrate.Engine;

/// <summary>When the destination VM may resume (<see cref="MigrationOptions.Switchover"/>).</summary>
public enum SwitchoverMode
{
    /// <summary>
    /// As soon as the destination gate holds every block of the final set: the last blocks stream while
    /// the VM runs there, and its I/O on a block still in flight waits for that block. Needs a shim in
    /// gate mode on every destination disk; otherwise the engine falls back to <see cref="Commit"/>.
    /// </summary>
    Gate,

    /// <summary>Only after every final block is written and fsynced at the destination (the commit).</summary>
    Commit,
}
