namespace BlockMigrate.Receiver;

/// <summary>The receiver refused or failed a migration; the message is also sent to the source.</summary>
public sealed class ReceiverException(string message) : BlockMigrateException(message);
