namespace BlockMigrate.Protocol;

/// <summary>
/// The receiver's answer to <see cref="HelloMessage"/>, one entry per disk in the same order, and the
/// data codecs it decodes besides LZ4: <see cref="BlockCodec.Advertised"/> (a receiver that lists none gets LZ4 or raw only).
/// <c>MemoryKeyDir</c>: where the receiver wrote the Hello's memory key (a root-only directory holding
/// QEMU's <c>keys.psk</c>, removed when the session ends); null when none was offered.
/// <c>SeedKey</c>: the receiver holds seed images (<c>receive --seed</c>, <c>seed-dir</c>) and drew this key
/// (64 hex digits) for this migration's <see cref="BlockHash"/>es; only then may the source send
/// <see cref="FrameType.SeedHashes"/>. Null (the field left out): no seeds, no exchange.
/// <c>RecordMs</c>: what the receiver's slowest durable state record took while it opened the disks (write,
/// fsync, rename, directory fsync), in milliseconds; the switchover writes one per disk before its answer, so
/// the source's estimate of it uses this. Null (left out, e.g. on a resume, which writes none): not measured.
/// </summary>
public sealed record WelcomeMessage(IReadOnlyList<DiskAnswer> Disks, IReadOnlyList<string>? Codecs = null, string? MemoryKeyDir = null,
    string? SeedKey = null, double? RecordMs = null) : IProtocolMessage
{
    public const string Zstd = BlockCodec.ZstdName;

    /// <summary>The longest record time a Welcome may state (10 minutes: past any source's stall timeout).</summary>
    public const double MaxRecordMs = 600_000;

    public void Validate()
    {
        if (Disks == null) throw new ProtocolException("welcome without a disk list");
        if (Disks.Any(d => d?.Name == null)) throw new ProtocolException("welcome with a null disk or one without a name");
        if (Codecs != null && Codecs.Any(c => c == null)) throw new ProtocolException("welcome with a null codec");
        if (SeedKey != null && (SeedKey.Length != 2 * BlockHash.KeyBytes || !SeedKey.All(Uri.IsHexDigit)))
            throw new ProtocolException($"welcome with a seed key that is not {2 * BlockHash.KeyBytes} hex digits");
        if (RecordMs is { } r && !(r >= 0 && r <= MaxRecordMs))
            throw new ProtocolException($"welcome with a record time that is not 0 to {MaxRecordMs} ms");
    }
}
