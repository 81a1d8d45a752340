namespace BlockMigrate.Protocol;

/// <summary>The peer reported a failure of its own (an Error frame); the message is the peer's line, made printable (<see cref="PeerText"/>).</summary>
public sealed class RemoteFailureException(string message) : BlockMigrateException(message);
