namespace BlockMigrate.Transport;

/// <summary>Connecting, authenticating or talking to the peer failed (keys, TLS, the network).</summary>
public class TransportException : BlockMigrateException
{
    public TransportException(string message) : base(message) { }
    public TransportException(string message, Exception inner) : base(message, inner) { }
}
