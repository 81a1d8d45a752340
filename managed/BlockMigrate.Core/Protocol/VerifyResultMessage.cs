namespace BlockMigrate.Protocol;

/// <summary>
/// The receiver's hash of each disk image as committed, in Hello's order. <see cref="Digest"/> says which:
/// null (absent) for the SHA-256 of the whole image (older receivers, or a Verify frame with an empty
/// payload), <see cref="NonzeroDigestName"/> for <see cref="Verify.NonzeroDigest"/>.
/// </summary>
public sealed record VerifyResultMessage(IReadOnlyList<string> Sha256, string? Digest = null) : IProtocolMessage
{
    public const string NonzeroDigestName = "nonzero-sha256";

    public void Validate() => MessageChecks.Check(this);
}
