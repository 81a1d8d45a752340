namespace BlockMigrate.Protocol;

/// <summary>What a <see cref="FrameType.Verify"/> frame asks the receiver to compute for each disk.</summary>
public enum VerifyDigest : byte
{
    /// <summary>SHA-256 of the whole image, holes read as zeros (an empty payload: what older sources send).</summary>
    WholeImage = 0,
    /// <summary>
    /// <see cref="Verify.NonzeroDigest"/>: SHA-256 over the image's non-zero 4 KiB units with their offsets, found
    /// through SEEK_DATA/SEEK_HOLE: holes are not read, so the time follows the data, not the disk's size.
    /// </summary>
    Nonzero = 1,
}

/// <summary>
/// A Verify frame's payload: empty (<see cref="VerifyDigest.WholeImage"/>, older sources) or one byte naming
/// the digest. Anything else is refused at decode (<see cref="MessageChecks.CheckVerifyRequest"/>).
/// </summary>
public readonly record struct VerifyRequest(VerifyDigest Digest)
{
    public byte[] Encode() => Digest == VerifyDigest.WholeImage ? [] : [(byte)Digest];

    public static VerifyRequest Decode(ReadOnlySpan<byte> payload) => new(MessageChecks.CheckVerifyRequest(payload));
}
