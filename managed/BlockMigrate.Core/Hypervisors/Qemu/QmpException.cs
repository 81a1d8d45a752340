namespace BlockMigrate.Hypervisors.Qemu;

/// <summary>
/// A QMP command failed. <see cref="ErrorClass"/> and <see cref="Description"/> are QEMU's own
/// (<c>{"error": {"class": ..., "desc": ...}}</c>); a lost connection has the class <c>Disconnected</c>.
/// </summary>
public sealed class QmpException : HypervisorException
{
    public const string DisconnectedClass = "Disconnected";

    public QmpException(string command, string errorClass, string description, Exception? inner = null)
        : base($"QMP {command}: {errorClass}: {description}", inner ?? new InvalidOperationException(description))
    {
        Command = command;
        ErrorClass = errorClass;
        Description = description;
    }

    /// <summary>The command that failed, or "connect"/"read" for the connection itself.</summary>
    public string Command { get; }
    public string ErrorClass { get; }
    public string Description { get; }
}
