namespace BlockMigrate.Transport;

/// <summary>Authentication failed: the peer's key is not the pinned/trusted one, or the peer refused ours.</summary>
public sealed class PeerRejectedException(string message) : TransportException(message);
