using BlockMigrate.Files;

namespace BlockMigrate.Transport;

/// <summary>
/// Fingerprints an endpoint trusts. The receiver's <c>trusted</c> file lists source keys, one per line:
/// <c>SHA256:xxxx [comment]</c>. The source's known-hosts file pins receivers: <c>HOST[:PORT] SHA256:xxxx</c>.
/// Blank lines and lines starting with '#' are ignored. Either file is refused (as ssh's StrictModes
/// refuses an authorized_keys file) when it or its directory is writable by group or others, or owned by
/// anyone but this user or root: whoever can change it can make us trust their key.
/// </summary>
public sealed class TrustList
{
    private readonly HashSet<string> _fingerprints;

    public TrustList(IEnumerable<string> fingerprints) => _fingerprints = new HashSet<string>(fingerprints, StringComparer.Ordinal);

    public int Count => _fingerprints.Count;

    public bool Contains(string fingerprint) => _fingerprints.Contains(fingerprint);

    public static TrustList LoadTrusted(string path)
    {
        var list = new List<string>();
        foreach (var (line, n) in Lines(path, "trusted file"))
        {
            var fp = KeyFingerprint.Normalize(line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)[0])
                     ?? throw new TransportException($"{path}:{n}: not a key fingerprint (expected SHA256:... as printed by 'blockmigrate keygen')");
            list.Add(fp);
        }
        return new TrustList(list);
    }

    /// <summary>The fingerprint pinned for <paramref name="host"/>:<paramref name="port"/> (or for the bare host), or null.</summary>
    public static string? LookupKnownHost(string path, string host, int port)
    {
        foreach (var (line, n) in Lines(path, "known-hosts file"))
        {
            var parts = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length < 2) throw new TransportException($"{path}:{n}: expected 'HOST[:PORT] SHA256:...'");
            if (parts[0] == $"{host}:{port}" || parts[0] == host)
                return KeyFingerprint.Normalize(parts[1]) ?? throw new TransportException($"{path}:{n}: not a key fingerprint");
        }
        return null;
    }

    private static IEnumerable<(string Line, int Number)> Lines(string path, string what)
    {
        string[] lines;
        try
        {
            if (File.Exists(path) && StrictModes.TrustFileProblem(path, what) is { } problem) throw new TransportException(problem);
            lines = File.ReadAllLines(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new TransportException($"cannot read {path}: {e.Message}");
        }
        for (var i = 0; i < lines.Length; i++)
        {
            var t = lines[i].Trim();
            if (t.Length == 0 || t.StartsWith('#')) continue;
            yield return (t, i + 1);
        }
    }
}
