using BlockMigrate.Transport;

namespace BlockMigrate.TestSupport;

/// <summary>Source and receiver keys in a test directory, and the receiver's trusted file listing the source.</summary>
public sealed class KeyPair
{
    public KeyPair(string dir)
    {
        SourceKey = Path.Combine(dir, "source.pem");
        ReceiverKey = Path.Combine(dir, "receiver.pem");
        Trusted = Path.Combine(dir, "trusted");
        using (var s = NodeKey.Generate(SourceKey, "source")) SourceFingerprint = s.Fingerprint;
        using (var r = NodeKey.Generate(ReceiverKey, "receiver")) ReceiverFingerprint = r.Fingerprint;
        File.WriteAllText(Trusted, $"# sources allowed to send\n{SourceFingerprint} source\n");
    }

    private KeyPair(string dir, KeyPair source)
    {
        SourceKey = source.SourceKey;
        SourceFingerprint = source.SourceFingerprint;
        ReceiverKey = Path.Combine(dir, "receiver.pem");
        Trusted = source.Trusted;
        using var r = NodeKey.Generate(ReceiverKey, "receiver2");
        ReceiverFingerprint = r.Fingerprint;
    }

    /// <summary>The same source key, trusted the same way, by a second receiver with its own key.</summary>
    public static KeyPair WithNewReceiver(string dir, KeyPair source) => new(dir, source);

    public string SourceKey { get; }
    public string ReceiverKey { get; }
    public string Trusted { get; }
    public string SourceFingerprint { get; }
    public string ReceiverFingerprint { get; }
}
