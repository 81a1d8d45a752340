namespace BlockMigrate.Protocol;

/// <summary>
/// The receiver's answer to <see cref="HelloMessage"/>, one entry per disk in the same order, and the
/// data codecs it decodes besides LZ4 (a receiver that lists none gets LZ4 or raw only).
/// </summary>
public sealed record WelcomeMessage(IReadOnlyList<DiskAnswer> Disks, IReadOnlyList<string>? Codecs = null)
{
    public const string Zstd = "zstd";
}
