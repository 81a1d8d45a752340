namespace BlockMigrate.Protocol;

/// <summary>
/// Every field of a decoded Hello or Welcome checked before use: JSON leaves a missing or null field
/// null (or 0), whatever the record's types say, so a peer could otherwise crash the reader with a
/// null list, a null entry or a null string. Failures are <see cref="ProtocolException"/>s (one line,
/// the peer's own text made printable).
/// </summary>
public static class MessageChecks
{
    /// <summary>Disks in one migration, at most.</summary>
    public const int MaxDisks = 64;

    public static HelloMessage Check(HelloMessage hello)
    {
        if (hello.Disks == null) throw new ProtocolException("malformed Hello frame: no list of disks");
        if (hello.Disks.Count is 0 or > MaxDisks) throw new ProtocolException($"refused a migration of {hello.Disks.Count} disks (1 to {MaxDisks})");
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < hello.Disks.Count; i++)
        {
            var d = hello.Disks[i] ?? throw new ProtocolException($"malformed Hello frame: disk entry {i} is null");
            if (d.Name == null) throw new ProtocolException($"malformed Hello frame: disk entry {i} has no name");
            if (d.Lineage == null) throw new ProtocolException($"malformed Hello frame: disk {PeerText.Clean(d.Name)} has no lineage");
            if (!names.Add(d.Name)) throw new ProtocolException($"malformed Hello frame: disk {PeerText.Clean(d.Name)} offered twice");
            if (d.Allocated > d.Size)
                throw new ProtocolException($"malformed Hello frame: disk {PeerText.Clean(d.Name)} claims {d.Allocated} allocated bytes, more than its size {d.Size}");
        }
        return hello;
    }

    /// <summary>The receiver's Welcome must answer our offers, one entry per disk, in order.</summary>
    public static WelcomeMessage Check(WelcomeMessage welcome, IReadOnlyList<DiskOffer> offers)
    {
        if (welcome.Disks == null || welcome.Disks.Count != offers.Count) throw new ProtocolException("the receiver's welcome does not list our disks");
        for (var i = 0; i < offers.Count; i++)
            if (welcome.Disks[i]?.Name != offers[i].Name)
                throw new ProtocolException($"the receiver's welcome answers disk {PeerText.Clean(welcome.Disks[i]?.Name ?? "(none)")} where disk {offers[i].Name} was offered");
        return welcome;
    }
}
