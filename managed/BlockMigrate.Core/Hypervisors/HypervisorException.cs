namespace BlockMigrate.Hypervisors;

/// <summary>The hypervisor refused a step of the migration, or is not in the state the step needs.</summary>
public class HypervisorException : BlockMigrateException
{
    public HypervisorException(string message) : base(message) { }
    public HypervisorException(string message, Exception inner) : base(message, inner) { }
}
