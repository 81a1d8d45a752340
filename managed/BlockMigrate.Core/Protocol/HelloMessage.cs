namespace BlockMigrate.Protocol;

/// <summary>The source's opening: protocol version and the disks it brings.</summary>
public sealed record HelloMessage(int Version, IReadOnlyList<DiskOffer> Disks) : IProtocolMessage
{
    public const int CurrentVersion = 1;

    public void Validate()
    {
        if (Disks == null) throw new ProtocolException("hello without a disk list");
        foreach (var d in Disks)
        {
            if (d == null) throw new ProtocolException("hello with a null disk");
            if (d.Name == null) throw new ProtocolException("hello with a disk without a name");
            if (d.Lineage == null) throw new ProtocolException("hello with a disk without a lineage");
        }
    }
}
