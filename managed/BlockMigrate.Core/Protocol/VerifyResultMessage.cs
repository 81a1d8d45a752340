namespace BlockMigrate.Protocol;

/// <summary>The receiver's SHA-256 (hex) of each disk image as committed, in Hello's order.</summary>
public sealed record VerifyResultMessage(IReadOnlyList<string> Sha256) : IProtocolMessage
{
    public void Validate()
    {
        if (Sha256 == null || Sha256.Any(h => h == null)) throw new ProtocolException("verify result without a hash list or with a null hash");
    }
}
