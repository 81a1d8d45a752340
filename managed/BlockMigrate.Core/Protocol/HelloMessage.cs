namespace BlockMigrate.Protocol;

/// <summary>The source's opening: protocol version and the disks it brings.</summary>
public sealed record HelloMessage(int Version, IReadOnlyList<DiskOffer> Disks)
{
    public const int CurrentVersion = 1;
}
