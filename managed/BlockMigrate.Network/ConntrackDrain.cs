using System.Globalization;

namespace BlockMigrate.Network;

/// <summary>What a conntrack entry says about the tunnel (docs/network.md, "Drain").</summary>
internal enum ConntrackLiveness
{
    /// <summary>Cannot carry traffic any more, or never keeps the tunnel: TCP TIME_WAIT and CLOSE, UDP not
    /// [ASSURED], ICMP and other protocols.</summary>
    Done,

    /// <summary>A connection that can carry traffic whenever its ends want, idle or not: TCP ESTABLISHED with
    /// packets seen both ways, UDP [ASSURED].</summary>
    Live,

    /// <summary>A TCP handshake or close in progress, or a connection seen one way only: SYN_SENT, SYN_RECV,
    /// FIN_WAIT, CLOSE_WAIT, LAST_ACK, ESTABLISHED [UNREPLIED]. Its ends are sending (and resending) the
    /// packets that move it on; if none has passed for a while, it waits for a packet that went before
    /// tracking began or that will never come, and it keeps the tunnel only while packets pass.</summary>
    WhileActive,
}

/// <summary>One line of <c>conntrack -L</c> (default output format).</summary>
/// <param name="Key">The protocol and the original direction's tuple, e.g. "tcp src=… dst=… sport=… dport=…".</param>
/// <param name="Protocol">"tcp", "udp", "icmp", …</param>
/// <param name="State">The TCP state; null for other protocols.</param>
/// <param name="Remaining">Seconds until the entry expires. Every packet that moves the entry on sets it back
/// to its state's full timeout, so a falling value means no packet.</param>
/// <param name="Unreplied">[UNREPLIED]: no packet seen in the reply direction.</param>
/// <param name="Assured">[ASSURED].</param>
internal sealed record ConntrackEntry(string Key, string Protocol, string? State, int Remaining, bool Unreplied, bool Assured)
{
    /// <summary>The entries of <c>conntrack -L</c> output; lines that are not entries are skipped.</summary>
    public static IEnumerable<ConntrackEntry> Parse(string conntrackOutput)
    {
        foreach (var raw in conntrackOutput.Split('\n'))
        {
            var f = raw.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 4 || !int.TryParse(f[1], NumberStyles.None, CultureInfo.InvariantCulture, out _)
                || !int.TryParse(f[2], NumberStyles.None, CultureInfo.InvariantCulture, out var remaining))
                continue;
            var state = f[3].Contains('=') ? null : f[3];
            var key = new List<string> { f[0] };
            int srcs = 0;
            foreach (var t in f.AsSpan(3))
            {
                if (t.StartsWith("src=", StringComparison.Ordinal) && ++srcs == 2) break;
                if (t.Contains('=') && !t.StartsWith("mark=", StringComparison.Ordinal) && !t.StartsWith("use=", StringComparison.Ordinal))
                    key.Add(t);
            }
            if (srcs == 0) continue;
            yield return new ConntrackEntry(string.Join(' ', key), f[0], state, remaining,
                raw.Contains("[UNREPLIED]", StringComparison.Ordinal), raw.Contains("[ASSURED]", StringComparison.Ordinal));
        }
    }

    /// <summary>What this entry says about the tunnel.</summary>
    public ConntrackLiveness Liveness => Protocol switch
    {
        "tcp" => State switch
        {
            "TIME_WAIT" or "CLOSE" => ConntrackLiveness.Done,
            "ESTABLISHED" when !Unreplied => ConntrackLiveness.Live,
            null => ConntrackLiveness.Done,
            _ => ConntrackLiveness.WhileActive,
        },
        "udp" => Assured ? ConntrackLiveness.Live : ConntrackLiveness.Done,
        _ => ConntrackLiveness.Done,
    };

    public override string ToString() => $"{State ?? Protocol} {Key[(Protocol.Length + 1)..]}{(Unreplied ? " [UNREPLIED]" : "")}";
}

/// <summary>
/// Counts the connections that keep the tunnel, from successive <c>conntrack -L</c> listings of the source
/// host (one per drain poll). <see cref="ConntrackLiveness.Live"/> entries always count;
/// <see cref="ConntrackLiveness.WhileActive"/> ones only until no packet has moved them for
/// <c>staleAfter</c>. An entry's idle time is not in the listing; it is bounded from below by how far its
/// remaining timeout has fallen since the highest value seen for it in the same state (each packet sets the
/// timeout back to the state's full value, and without packets it falls one per second), so an entry is
/// called stale only after it has been watched that long without a packet, whatever the host's timeouts.
/// Not thread-safe: one poll at a time.
/// </summary>
internal sealed class ConntrackDrain(TimeSpan staleAfter)
{
    readonly Dictionary<string, (string? State, int Highest)> _watched = [];

    /// <summary>The result of one poll.</summary>
    /// <param name="Live">Connections that keep the tunnel.</param>
    /// <param name="Stale">Entries no longer counted because nothing moved them for <c>staleAfter</c>.</param>
    public sealed record Poll(int Live, IReadOnlyList<ConntrackEntry> Stale);

    /// <summary>Counts one listing (the <c>-d OLD</c> and <c>-s OLD</c> outputs together).</summary>
    public Poll Count(string conntrackOutput)
    {
        int live = 0;
        var stale = new List<ConntrackEntry>();
        var seen = new HashSet<string>();
        foreach (var e in ConntrackEntry.Parse(conntrackOutput))
        {
            if (!seen.Add(e.Key)) continue;
            switch (e.Liveness)
            {
                case ConntrackLiveness.Live:
                    _watched.Remove(e.Key);
                    live++;
                    break;
                case ConntrackLiveness.Done:
                    _watched.Remove(e.Key);
                    break;
                case ConntrackLiveness.WhileActive:
                    var highest = _watched.TryGetValue(e.Key, out var w) && w.State == e.State ? Math.Max(w.Highest, e.Remaining) : e.Remaining;
                    _watched[e.Key] = (e.State, highest);
                    if (highest - e.Remaining >= staleAfter.TotalSeconds) stale.Add(e);
                    else live++;
                    break;
            }
        }
        foreach (var k in _watched.Keys.Where(k => !seen.Contains(k)).ToList())
            _watched.Remove(k);
        return new Poll(live, stale);
    }

    /// <summary>The live count of a single listing, with no history: every <see cref="ConntrackLiveness.WhileActive"/>
    /// entry counts (it has not been watched yet).</summary>
    public static int Live(string conntrackOutput) => new ConntrackDrain(TimeSpan.MaxValue).Count(conntrackOutput).Live;
}
