using System.Net;
using System.Net.Sockets;

namespace BlockMigrate.Network;

/// <summary>
/// Per-VM network redirection settings (the VM config file's <c>network</c> block and the migrate flags).
/// DNS is enabled by <see cref="DnsName"/>, the tunnel by <see cref="Tunnel"/> other than None.
/// <see cref="Validate"/> lists every problem as one line.
/// </summary>
public sealed record RedirectionOptions
{
    /// <summary>The VM's name (logs, and the default tunnel id).</summary>
    public required string VmName { get; init; }

    // ---- DNS ----

    /// <summary>Fully qualified name whose A/AAAA records point at the VM, e.g. "web.vm.test". Null: no DNS update.</summary>
    public string? DnsName { get; init; }

    /// <summary>The zone the name is in, e.g. "vm.test".</summary>
    public string? Zone { get; init; }

    /// <summary>The zone's primary, "host", "host:port" or "[v6]:port" (port 53 by default).</summary>
    public string? DnsServer { get; init; }

    /// <summary>TSIG key file as written by <c>tsig-keygen -a hmac-sha256 NAME</c> (nsupdate -k);
    /// must not be accessible by group or others. Null sends an unsigned update (only for servers that
    /// authorise by address).</summary>
    public string? KeyFile { get; init; }

    /// <summary>TTL of the new records.</summary>
    public int DnsTtl { get; init; } = 60;

    /// <summary>If set, before migration the current records are re-published with this TTL
    /// (--dns-prepare-ttl), so resolvers drop the old answer soon after switchover.</summary>
    public int? DnsPrepareTtl { get; init; }

    /// <summary>How long one DNS update may take.</summary>
    public TimeSpan DnsTimeout { get; init; } = TimeSpan.FromSeconds(10);

    // ---- addresses ----

    /// <summary>The VM's address at the source, which existing connections use (IPv4 for the tunnel).</summary>
    public IPAddress? OldAddress { get; init; }

    /// <summary>The VM's address(es) at the destination: the name's new A/AAAA records.</summary>
    public IReadOnlyList<IPAddress> NewAddresses { get; init; } = [];

    // ---- tunnel ----

    /// <summary>Tunnel kind (--tunnel-kind); Auto picks VXLAN.</summary>
    public TunnelKind Tunnel { get; init; } = TunnelKind.Auto;

    /// <summary>The destination host's address as the source host reaches it (the tunnel's far end).</summary>
    public IPAddress? TunnelRemote { get; init; }

    /// <summary>The source host's address for the tunnel; default: the source address the source host's
    /// routing picks towards <see cref="TunnelRemote"/>.</summary>
    public IPAddress? TunnelLocal { get; init; }

    /// <summary>1..4095; names the link bmtunN, the VXLAN VNI/GRE key, the routing table and the overlay
    /// /30 in 169.254.0.0/18. Default: derived from <see cref="VmName"/>. Two migrations at once from or to
    /// the same host need different ids.</summary>
    public int? TunnelId { get; init; }

    /// <summary>UDP port of VXLAN (and WireGuard's listen port).</summary>
    public int TunnelPort { get; init; } = 4789;

    /// <summary>Remove the tunnel after this long even if connections remain (--tunnel-timeout).</summary>
    public TimeSpan TunnelTimeout { get; init; } = TimeSpan.FromMinutes(30);

    /// <summary>Keep the tunnel at least this long after switchover, even when nothing is tracked
    /// (packets in flight, clients holding a cached DNS answer).</summary>
    public TimeSpan TunnelMinimumHold { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How often conntrack is asked whether connections remain.</summary>
    public TimeSpan DrainPollInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>A TCP connection to or from the old address that is half-open, closing, or seen one way only
    /// (SYN_SENT, SYN_RECV, FIN_WAIT, CLOSE_WAIT, LAST_ACK, ESTABLISHED [UNREPLIED]) stops keeping the
    /// tunnel once no packet has moved it on for this long. An established connection keeps it however
    /// long it is idle.</summary>
    public TimeSpan DrainStaleAfter { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The destination host's link towards the VM (bridge or tap); default: the link the
    /// destination's routing uses for the VM's new IPv4 address.</summary>
    public string? DestinationVmDevice { get; init; }

    /// <summary>Routing table for our routes on both hosts; default 45056 + tunnel id. Must be empty.</summary>
    public int? RoutingTable { get; init; }

    /// <summary>Priority of our ip rules (before main's 32766).</summary>
    public int RulePriority { get; init; } = 9000;

    // ---- where commands run ----

    /// <summary>Command prefix for the source host; empty runs locally (the normal case).</summary>
    public string SourceCommand { get; init; } = "";

    /// <summary>Command prefix that runs a command as root on the destination host, e.g.
    /// "ssh -o BatchMode=yes root@dst.example" (arguments are shell-quoted for ssh) or
    /// "ip netns exec NAME". Required for the tunnel.</summary>
    public string? DestinationCommand { get; init; }

    /// <summary>Command prefix for nsupdate/dig; empty runs locally.</summary>
    public string DnsCommand { get; init; } = "";

    /// <summary>True when the tunnel part is enabled.</summary>
    public bool TunnelEnabled => Tunnel != TunnelKind.None;

    /// <summary>True when the DNS part is enabled.</summary>
    public bool DnsEnabled => DnsName is not null;

    /// <summary>The tunnel id in use.</summary>
    public int EffectiveTunnelId => TunnelId ?? DefaultTunnelId(VmName);

    /// <summary>The routing table in use.</summary>
    public int EffectiveRoutingTable => RoutingTable ?? 45056 + EffectiveTunnelId;

    /// <summary>Every configuration problem, one line each; empty when the options are usable.</summary>
    public IReadOnlyList<string> Validate()
    {
        var e = new List<string>();
        if (string.IsNullOrWhiteSpace(VmName))
            e.Add("network: the VM name is empty");
        if (NewAddresses.Count == 0 && (DnsEnabled || TunnelEnabled))
            e.Add("network: no new address for the VM (new-address)");
        if (DnsEnabled)
        {
            if (!IsDomainName(DnsName!))
                e.Add($"dns-name '{DnsName}' is not a valid domain name");
            if (Zone is null || !IsDomainName(Zone))
                e.Add($"dns-zone '{Zone}' is missing or not a valid domain name");
            else if (DnsName is not null && !InZone(DnsName, Zone))
                e.Add($"dns-name '{DnsName}' is not inside zone '{Zone}'");
            if (DnsServer is null || !DnsServerAddress.TryParse(DnsServer, out _))
                e.Add($"dns-server '{DnsServer}' is missing or not host[:port]");
            if (DnsTtl is < 0 or > 604800)
                e.Add($"dns-ttl {DnsTtl} is outside 0..604800");
            if (DnsPrepareTtl is < 0 or > 604800)
                e.Add($"dns-prepare-ttl {DnsPrepareTtl} is outside 0..604800");
            if (DnsTimeout <= TimeSpan.Zero)
                e.Add("dns-timeout must be positive");
        }
        if (TunnelEnabled)
        {
            if (OldAddress is null)
                e.Add("tunnel: old-address is required");
            else if (OldAddress.AddressFamily != AddressFamily.InterNetwork)
                e.Add($"tunnel: old-address {OldAddress} is IPv6; the tunnel carries IPv4 only (use tunnel-kind none)");
            if (TunnelRemote is null)
                e.Add("tunnel: tunnel-remote (the destination host's address) is required");
            else if (TunnelRemote.AddressFamily != AddressFamily.InterNetwork)
                e.Add($"tunnel: tunnel-remote {TunnelRemote} must be IPv4");
            if (TunnelLocal is { AddressFamily: not AddressFamily.InterNetwork })
                e.Add($"tunnel: tunnel-local {TunnelLocal} must be IPv4");
            if (DestinationVmDevice is null && !NewAddresses.Any(a => a.AddressFamily == AddressFamily.InterNetwork))
                e.Add("tunnel: give an IPv4 new-address or destination-vm-device, to find the VM's link on the destination");
            if (DestinationVmDevice is not null && !IsInterfaceName(DestinationVmDevice))
                e.Add($"tunnel: destination-vm-device '{DestinationVmDevice}' is not an interface name");
            if (string.IsNullOrWhiteSpace(DestinationCommand))
                e.Add("tunnel: destination-command is required (e.g. \"ssh -o BatchMode=yes root@dst\")");
            if (TunnelId is < 1 or > 4095)
                e.Add($"tunnel-id {TunnelId} is outside 1..4095");
            if (TunnelPort is < 1 or > 65535)
                e.Add($"tunnel-port {TunnelPort} is outside 1..65535");
            if (RoutingTable is < 1 or > 0x7fffffff or 253 or 254 or 255)
                e.Add($"routing-table {RoutingTable} is reserved or out of range");
            if (RulePriority is < 1 or >= 32766)
                e.Add($"rule-priority {RulePriority} must be 1..32765 (before the main table)");
            if (TunnelTimeout <= TimeSpan.Zero)
                e.Add("tunnel-timeout must be positive");
            if (TunnelMinimumHold < TimeSpan.Zero || TunnelMinimumHold > TunnelTimeout)
                e.Add("tunnel-minimum-hold must be between 0 and tunnel-timeout");
            if (DrainPollInterval <= TimeSpan.Zero)
                e.Add("drain-poll-interval must be positive");
            if (DrainStaleAfter <= TimeSpan.Zero)
                e.Add("drain-stale-after must be positive");
        }
        foreach (var a in NewAddresses)
            if (OldAddress is not null && a.Equals(OldAddress))
                e.Add($"new-address {a} equals old-address");
        return e;
    }

    /// <summary>Stable id 1..4095 from the VM name (FNV-1a).</summary>
    public static int DefaultTunnelId(string vmName)
    {
        uint h = 2166136261;
        foreach (var c in vmName) { h ^= c; h *= 16777619; }
        return (int)(h % 4095) + 1;
    }

    internal static bool IsDomainName(string s)
    {
        var n = s.TrimEnd('.');
        if (n.Length is 0 or > 253) return false;
        foreach (var label in n.Split('.'))
        {
            if (label.Length is 0 or > 63 || label[0] == '-' || label[^1] == '-') return false;
            if (!label.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_')) return false;
        }
        return true;
    }

    static bool InZone(string name, string zone)
    {
        string n = name.TrimEnd('.').ToLowerInvariant(), z = zone.TrimEnd('.').ToLowerInvariant();
        return n == z || n.EndsWith("." + z, StringComparison.Ordinal);
    }

    internal static bool IsInterfaceName(string s) =>
        s.Length is > 0 and < 16 && s.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '@') ;
}
