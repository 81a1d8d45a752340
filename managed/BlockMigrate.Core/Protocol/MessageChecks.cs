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
            CheckLineage(d);
        }
        return hello;
    }

    /// <summary>
    /// A Verify frame's payload: empty (the whole-image SHA-256 of older sources) or exactly one byte naming
    /// a digest this receiver knows (<see cref="VerifyDigest"/>, not <see cref="VerifyDigest.WholeImage"/>:
    /// that one is the empty payload).
    /// </summary>
    public static VerifyDigest CheckVerifyRequest(ReadOnlySpan<byte> payload) => payload.Length switch
    {
        0 => VerifyDigest.WholeImage,
        1 when payload[0] == (byte)VerifyDigest.Nonzero => VerifyDigest.Nonzero,
        1 => throw new ProtocolException($"verify frame asks for unknown digest {payload[0]}"),
        _ => throw new ProtocolException($"verify frame of {payload.Length} bytes (0 or 1)"),
    };

    /// <summary>
    /// The receiver's hashes: a list without null entries; <c>digest</c> absent (the whole-image SHA-256 of an
    /// older receiver) or <see cref="VerifyResultMessage.NonzeroDigestName"/>, with every hash then 64 hex digits.
    /// </summary>
    public static VerifyResultMessage Check(VerifyResultMessage result)
    {
        if (result.Sha256 == null || result.Sha256.Any(h => h == null)) throw new ProtocolException("verify result without a hash list or with a null hash");
        if (result.Sha256.Count > MaxDisks) throw new ProtocolException($"verify result with {result.Sha256.Count} hashes (at most {MaxDisks} disks)");
        if (result.Digest != null)
        {
            if (result.Digest != VerifyResultMessage.NonzeroDigestName)
                throw new ProtocolException($"verify result with unknown digest {PeerText.Clean(result.Digest)}");
            if (result.Sha256.Any(h => h.Length != 64 || !h.All(Uri.IsHexDigit)))
                throw new ProtocolException("verify result with a hash that is not 64 hex digits");
        }
        return result;
    }

    /// <summary>Longest refusal reason a receiver may give for a return claim.</summary>
    public const int MaxReasonLength = 400;

    /// <summary>True for 32 lowercase or uppercase hex digits (16 bytes), the form of every lineage.</summary>
    public static bool IsLineage(string? s) => s is { Length: 32 } && s.All(Uri.IsHexDigit);

    /// <summary>The return-trip fields of an offer: a disk lineage with a generation ≥ 1; a return claim only with them, below the generation, never with a resume or a finish.</summary>
    private static void CheckLineage(DiskOffer d)
    {
        var name = PeerText.Clean(d.Name);
        if (d.DiskLineage == null)
        {
            if (d.Generation != 0 || d.ReturnBase != null)
                throw new ProtocolException($"malformed Hello frame: disk {name} names a generation or a return base without a disk lineage");
            return;
        }
        if (!IsLineage(d.DiskLineage)) throw new ProtocolException($"malformed Hello frame: disk {name} has a malformed disk lineage");
        if (d.Generation == 0 || d.Generation == ulong.MaxValue)
            throw new ProtocolException($"malformed Hello frame: disk {name} has generation {d.Generation}");
        if (d.ReturnBase is { } b)
        {
            if (b == 0 || b >= d.Generation)
                throw new ProtocolException($"malformed Hello frame: disk {name} claims return base {b} for generation {d.Generation}");
            if (d.Resume || d.Finish)
                throw new ProtocolException($"malformed Hello frame: disk {name} claims a return base and a resume at once");
        }
    }

    /// <summary>The receiver's Welcome must answer our offers, one entry per disk, in order.</summary>
    public static WelcomeMessage Check(WelcomeMessage welcome, IReadOnlyList<DiskOffer> offers)
    {
        if (welcome.Disks == null || welcome.Disks.Count != offers.Count) throw new ProtocolException("the receiver's welcome does not list our disks");
        for (var i = 0; i < offers.Count; i++)
            if (welcome.Disks[i]?.Name != offers[i].Name)
                throw new ProtocolException($"the receiver's welcome answers disk {PeerText.Clean(welcome.Disks[i]?.Name ?? "(none)")} where disk {offers[i].Name} was offered");
        for (var i = 0; i < offers.Count; i++)
        {
            var a = welcome.Disks[i]!;
            if (a.ReturnBase && (offers[i].ReturnBase == null || a.Resume))
                throw new ProtocolException($"the receiver's welcome accepts a return base for disk {offers[i].Name}, which claimed none");
            if (a.ReturnRefused is { Length: > MaxReasonLength })
                throw new ProtocolException($"the receiver's welcome gives a {a.ReturnRefused.Length}-character reason for disk {offers[i].Name} (at most {MaxReasonLength})");
            if (a.DiskLineage != null && (!IsLineage(a.DiskLineage) || a.Generation is 0 or ulong.MaxValue))
                throw new ProtocolException($"the receiver's welcome names a malformed disk lineage or generation for disk {offers[i].Name}");
        }
        return welcome;
    }
}
