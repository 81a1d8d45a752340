namespace BlockMigrate.Protocol;

/// <summary>
/// The receiver's answer to <see cref="HelloMessage"/>, one entry per disk in the same order, and the
/// data codecs it decodes besides LZ4: <see cref="BlockCodec.Advertised"/> (a receiver that lists none gets LZ4 or raw only).
/// <c>MemoryKeyDir</c>: where the receiver wrote the Hello's memory key (a root-only directory holding
/// QEMU's <c>keys.psk</c>, removed when the session ends); null when none was offered.
/// <c>SeedKey</c>: the receiver holds seed images (<c>receive --seed</c>, <c>seed-dir</c>) and drew this key
/// (64 hex digits) for this migration's <see cref="BlockHash"/>es; only then may the source send
/// <see cref="FrameType.SeedHashes"/>. Null (the field left out): no seeds, no exchange.
/// </summary>
public sealed record WelcomeMessage(IReadOnlyList<DiskAnswer> Disks, IReadOnlyList<string>? Codecs = null, string? MemoryKeyDir = null,
    string? SeedKey = null) : IProtocolMessage
{
    public const string Zstd = BlockCodec.ZstdName;

    public void Validate()
    {
        if (Disks == null) throw new ProtocolException("welcome without a disk list");
        if (Disks.Any(d => d?.Name == null)) throw new ProtocolException("welcome with a null disk or one without a name");
        if (Codecs != null && Codecs.Any(c => c == null)) throw new ProtocolException("welcome with a null codec");
        if (SeedKey != null && (SeedKey.Length != 2 * BlockHash.KeyBytes || !SeedKey.All(Uri.IsHexDigit)))
            throw new ProtocolException($"welcome with a seed key that is not {2 * BlockHash.KeyBytes} hex digits");
    }
}
