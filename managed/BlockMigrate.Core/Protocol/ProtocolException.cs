namespace BlockMigrate.Protocol;

/// <summary>The peer sent something that is not a valid frame (bad magic, checksum, length, order or content).</summary>
public sealed class ProtocolException(string message) : BlockMigrateException(message);
