namespace BlockMigrate.Protocol;

/// <summary>The receiver's SHA-256 (hex) of each disk image as committed, in Hello's order.</summary>
public sealed record VerifyResultMessage(IReadOnlyList<string> Sha256);
