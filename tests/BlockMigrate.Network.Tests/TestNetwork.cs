using System.Net;

namespace BlockMigrate.Network.Tests;

/// <summary>
/// Hosts as network namespaces, all named bmn&lt;pid&gt;-*:
/// <code>
///   br: bridge br0 (the LAN)  ── src 10.77.0.1 ── dst 10.77.0.2 ── cli 10.77.0.3
///   src: vmbr0 10.10.1.1/24 (VM bridge) ◄─ vmp ═ veth ═ eth0 of "vm" (old address 10.10.1.10)
///   dst: vmbr0 10.10.2.1/24 (VM bridge, new address 10.10.2.10)
/// </code>
/// Migration moves vmp from src's vmbr0 to dst's vmbr0 and gives the VM its new address and gateway,
/// as a guest that resumed at the destination would be. Each VM bridge keeps a spare veth port so it
/// keeps its carrier when the VM leaves (as a real host bridge with an uplink would).
/// </summary>
internal sealed class TestNetwork
{
    public const string VmPort = "vmp";
    public static readonly IPAddress Old = IPAddress.Parse("10.10.1.10");
    public static readonly IPAddress New = IPAddress.Parse("10.10.2.10");
    public static readonly IPAddress SourceHost = IPAddress.Parse("10.77.0.1");
    public static readonly IPAddress DestinationHost = IPAddress.Parse("10.77.0.2");

    public string Prefix { get; } = $"bmn{Environment.ProcessId}";
    public string Bridge => $"{Prefix}-br";
    public string Src => $"{Prefix}-src";
    public string Dst => $"{Prefix}-dst";
    public string Cli => $"{Prefix}-cli";
    public string Vm => $"{Prefix}-vm";
    IEnumerable<string> All => [Bridge, Src, Dst, Cli, Vm];
    public bool VmAtDestination { get; private set; }

    public async Task CreateAsync(CancellationToken ct)
    {
        await DestroyAsync();
        foreach (var ns in All)
            await Sh.RunAsync($"ip netns add {ns} && ip -n {ns} link set lo up", ct: ct);
        await Sh.RunAsync($"ip -n {Bridge} link add br0 type bridge && ip -n {Bridge} link set br0 up", ct: ct);
        int i = 1;
        foreach (var (ns, tag) in new[] { (Src, "src"), (Dst, "dst"), (Cli, "cli") })
        {
            await Sh.RunAsync($"""
                ip -n {Bridge} link add v-{tag} type veth peer name eth0 netns {ns}
                ip -n {Bridge} link set v-{tag} master br0 up
                ip -n {ns} addr add 10.77.0.{i}/24 dev eth0
                ip -n {ns} link set eth0 up
                """, ct: ct);
            i++;
        }
        foreach (var (ns, net, mac) in new[] { (Src, 1, "02:bb:00:00:01:01"), (Dst, 2, "02:bb:00:00:02:01") })
            await Sh.RunAsync($"""
                ip netns exec {ns} sysctl -qw net.ipv4.ip_forward=1
                ip -n {ns} link add vmbr0 address {mac} type bridge
                ip -n {ns} link add hold0 type veth peer name hold1
                ip -n {ns} link set hold0 master vmbr0 up
                ip -n {ns} link set hold1 up
                ip -n {ns} addr add 10.10.{net}.1/24 dev vmbr0
                ip -n {ns} link set vmbr0 up
                """, ct: ct);
        await Sh.RunAsync($"""
            ip -n {Src} link add {VmPort} type veth peer name eth0 netns {Vm}
            ip -n {Src} link set {VmPort} master vmbr0 up
            ip -n {Vm} addr add {Old}/24 dev eth0
            ip -n {Vm} link set eth0 up
            ip -n {Vm} route add default via 10.10.1.1
            ip -n {Cli} route add 10.10.1.0/24 via {SourceHost}
            ip -n {Cli} route add 10.10.2.0/24 via {DestinationHost}
            """, ct: ct);
    }

    /// <summary>The VM resumes at the destination: its port moves to dst's bridge, it gets its new address
    /// and the destination's gateway, and keeps the old address.</summary>
    public async Task MigrateVmAsync(CancellationToken ct)
    {
        await Sh.RunAsync($"""
            ip -n {Src} link set {VmPort} netns {Dst}
            ip -n {Dst} link set {VmPort} master vmbr0 up
            ip -n {Vm} addr add {New}/24 dev eth0
            ip -n {Vm} route replace default via 10.10.2.1
            """, ct: ct);
        VmAtDestination = true;
    }

    public async Task DestroyAsync()
    {
        foreach (var ns in All)
            await Sh.TryAsync($"ip netns del {ns} 2>/dev/null");
    }
}
