namespace BlockMigrate.Network;

/// <summary>
/// Finds out which tunnel kinds a host's kernel has, without touching its network configuration:
/// a module already in /sys/module, or else a throwaway link created inside a private network namespace
/// (<c>unshare --net</c>) that vanishes with the probing process.
/// </summary>
internal static class TunnelKindProbe
{
    static (string Module, string LinkArgs) Probe(TunnelKind k) => k switch
    {
        TunnelKind.Vxlan => ("vxlan", "vxlan id 1 dstport 4789"),
        TunnelKind.Gre => ("ip_gre", "gre local 127.0.0.1 remote 127.0.0.2"),
        TunnelKind.Ipip => ("ipip", "ipip local 127.0.0.1 remote 127.0.0.2"),
        TunnelKind.WireGuard => ("wireguard", "wireguard"),
        _ => throw new ArgumentOutOfRangeException(nameof(k)),
    };

    public static async Task<bool> HasAsync(IHostRunner host, TunnelKind kind, CancellationToken ct)
    {
        var (module, linkArgs) = Probe(kind);
        var script = $"test -d /sys/module/{module} || unshare --net ip link add bmprobe0 type {linkArgs} 2>/dev/null";
        if (kind == TunnelKind.WireGuard) script = $"command -v wg >/dev/null && ( {script} )";
        var r = await host.RunAsync("sh", ["-c", script], null, ct).ConfigureAwait(false);
        return r.Succeeded;
    }

    /// <summary>The kind to use on both hosts, and why. Null when not even VXLAN is available.</summary>
    public static async Task<(TunnelKind? Kind, string Reason)> ChooseAsync(
        TunnelKind requested, IHostRunner source, IHostRunner destination, CancellationToken ct)
    {
        var reasons = new List<string>();
        var order = requested is TunnelKind.Auto or TunnelKind.Vxlan
            ? new[] { TunnelKind.Vxlan }
            : new[] { requested, TunnelKind.Vxlan };
        foreach (var k in order)
        {
            bool s = await HasAsync(source, k, ct).ConfigureAwait(false);
            bool d = await HasAsync(destination, k, ct).ConfigureAwait(false);
            if (s && d)
            {
                reasons.Add(k == requested ? $"{Name(k)} requested and available on both hosts"
                    : requested == TunnelKind.Auto ? $"{Name(k)} (default) available on both hosts"
                    : $"using {Name(k)}");
                return (k, string.Join("; ", reasons));
            }
            reasons.Add($"{Name(k)} not in the kernel of the {(s ? "destination" : d ? "source" : "source and destination")} host");
        }
        return (null, string.Join("; ", reasons));
    }

    public static string Name(TunnelKind k) => k.ToString().ToLowerInvariant();
}
