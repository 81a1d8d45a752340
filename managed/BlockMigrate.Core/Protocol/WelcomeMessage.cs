namespace BlockMigrate.Protocol;

/// <summary>
/// The receiver's answer to <see cref="HelloMessage"/>, one entry per disk in the same order, and the
/// data codecs it decodes besides LZ4 (a receiver that lists none gets LZ4 or raw only).
/// <c>MemoryKeyDir</c>: where the receiver wrote the Hello's memory key (a root-only directory holding
/// QEMU's <c>keys.psk</c>, removed when the session ends); null when none was offered.
/// </summary>
public sealed record WelcomeMessage(IReadOnlyList<DiskAnswer> Disks, IReadOnlyList<string>? Codecs = null, string? MemoryKeyDir = null)
{
    public const string Zstd = "zstd";
}
