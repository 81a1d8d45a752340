using System.Net;
using System.Text.Json;
using NUnit.Framework;

namespace BlockMigrate.Network.Tests;

/// <summary>Configuration checks, the JSON report, and the small parsers; no processes.</summary>
[TestFixture]
public sealed class OptionsAndReportTests
{
    static RedirectionOptions Good => new()
    {
        VmName = "web",
        DnsName = "web.vm.test",
        Zone = "vm.test",
        DnsServer = "ns1.vm.test:53",
        KeyFile = "/etc/blockmigrate/web.key",
        OldAddress = IPAddress.Parse("192.0.2.10"),
        NewAddresses = [IPAddress.Parse("198.51.100.10")],
        TunnelRemote = IPAddress.Parse("198.51.100.1"),
        DestinationCommand = "ssh -o BatchMode=yes root@dst.example",
    };

    [Test]
    public void Good_options_validate_and_pick_tunnel_and_dns()
    {
        Assert.That(Good.Validate(), Is.Empty);
        Assert.That(Redirectors.Create(Good).Kind, Is.EqualTo("tunnel+dns"));
        Assert.That(Redirectors.Create(Good with { DnsName = null }).Kind, Is.EqualTo("tunnel"));
        Assert.That(Redirectors.Create(Good with { Tunnel = TunnelKind.None }).Kind, Is.EqualTo("dns"));
        Assert.That(Redirectors.Create(Good with { Tunnel = TunnelKind.None, DnsName = null }), Is.InstanceOf<NoneRedirector>());
    }

    [Test]
    public void Each_problem_is_one_line()
    {
        var bad = Good with
        {
            DnsName = "web.elsewhere.test",
            DnsServer = "host:99999",
            OldAddress = IPAddress.Parse("2001:db8::1"),
            TunnelRemote = null,
            DestinationCommand = null,
            TunnelId = 5000,
            RulePriority = 40000,
            DnsPrepareTtl = -1,
            DrainStaleAfter = TimeSpan.Zero,
        };
        var errors = bad.Validate();
        Assert.That(errors, Has.Count.EqualTo(9), string.Join("\n", errors));
        Assert.That(errors, Has.Some.Contain("drain-stale-after must be positive"));
        Assert.That(errors, Has.All.Not.Contain("\n"));
        Assert.That(errors, Has.Some.Contain("not inside zone 'vm.test'"));
        Assert.That(errors, Has.Some.Contain("IPv4 only"));
        Assert.That(errors, Has.Some.Contain("destination-command is required"));
        Assert.That(() => Redirectors.Create(bad), Throws.ArgumentException);
    }

    [Test]
    public void Default_tunnel_id_is_stable_and_in_range()
    {
        Assert.That(RedirectionOptions.DefaultTunnelId("web"), Is.EqualTo(2621), "FNV-1a of the name: the same on every host and run");
        foreach (var n in new[] { "a", "web", "db-01", "a-very-long-vm-name-with-many-letters" })
            Assert.That(RedirectionOptions.DefaultTunnelId(n), Is.InRange(1, 4095));
        Assert.That(Good.EffectiveRoutingTable, Is.EqualTo(45056 + Good.EffectiveTunnelId));
    }

    [TestCase("127.0.0.1", "127.0.0.1", 53)]
    [TestCase("127.0.0.1:5353", "127.0.0.1", 5353)]
    [TestCase("ns1.example.org:53", "ns1.example.org", 53)]
    [TestCase("2001:db8::53", "2001:db8::53", 53)]
    [TestCase("[2001:db8::53]:5353", "2001:db8::53", 5353)]
    public void Dns_server_parses(string text, string host, int port)
    {
        Assert.That(DnsServerAddress.TryParse(text, out var s), Is.True);
        Assert.That(s, Is.EqualTo(new DnsServerAddress(host, port)));
    }

    [TestCase("")]
    [TestCase("host:0")]
    [TestCase("[::1")]
    [TestCase("a b")]
    public void Bad_dns_server_is_rejected(string text) =>
        Assert.That(DnsServerAddress.TryParse(text, out _), Is.False);

    [Test]
    public void Report_serialises_with_camel_case_names_and_enum_names()
    {
        var r = new RedirectionReport
        {
            Redirector = "tunnel+dns",
            TunnelKind = TunnelKind.Vxlan,
            TunnelUpAt = DateTimeOffset.Parse("2026-01-01T00:00:01Z"),
            TunnelRemovedBecause = TunnelRemovalReason.Drained,
            DnsStatus = DnsUpdateStatus.Refused,
        }.WithError("dns", "refused");
        var json = r.ToJson();
        using var doc = JsonDocument.Parse(json);
        Assert.That(doc.RootElement.GetProperty("redirector").GetString(), Is.EqualTo("tunnel+dns"));
        Assert.That(json, Does.Contain("\"tunnel+dns\""));
        Assert.That(doc.RootElement.GetProperty("tunnelKind").GetString(), Is.EqualTo("Vxlan"));
        Assert.That(doc.RootElement.GetProperty("tunnelRemovedBecause").GetString(), Is.EqualTo("Drained"));
        Assert.That(doc.RootElement.GetProperty("errors")[0].GetProperty("step").GetString(), Is.EqualTo("dns"));
        Assert.That(doc.RootElement.TryGetProperty("dnsChangedAt", out _), Is.False, "nulls are left out");
        Assert.That(doc.RootElement.TryGetProperty("succeeded", out _), Is.False);

        var back = JsonSerializer.Deserialize(json, RedirectionJsonContext.Default.RedirectionReport)!;
        Assert.That(back.TunnelUpAt, Is.EqualTo(r.TunnelUpAt));
        Assert.That(back.DnsFailed, Is.True);
    }

    [Test]
    public void Conntrack_counts_only_live_connections()
    {
        const string output = """
            tcp      6 431999 ESTABLISHED src=10.77.0.3 dst=10.10.1.10 sport=40000 dport=7000 src=10.10.1.10 dst=10.77.0.3 sport=7000 dport=40000 [ASSURED] mark=0 use=1
            tcp      6 118 TIME_WAIT src=10.77.0.3 dst=10.10.1.10 sport=40002 dport=8080 src=10.10.1.10 dst=10.77.0.3 sport=8080 dport=40002 [ASSURED] mark=0 use=1
            tcp      6 9 CLOSE src=10.77.0.3 dst=10.10.1.10 sport=40004 dport=8080 src=10.10.1.10 dst=10.77.0.3 sport=8080 dport=40004 mark=0 use=1
            tcp      6 55 FIN_WAIT src=10.77.0.3 dst=10.10.1.10 sport=40006 dport=7000 src=10.10.1.10 dst=10.77.0.3 sport=7000 dport=40006 [ASSURED] mark=0 use=1
            udp      17 170 src=10.77.0.3 dst=10.10.1.10 sport=5000 dport=53 src=10.10.1.10 dst=10.77.0.3 sport=53 dport=5000 [ASSURED] mark=0 use=1
            udp      17 20 src=10.77.0.3 dst=10.10.1.10 sport=5001 dport=53 [UNREPLIED] src=10.10.1.10 dst=10.77.0.3 sport=53 dport=5001 mark=0 use=1
            icmp     1 29 src=10.77.0.3 dst=10.10.1.10 type=8 code=0 id=1 src=10.10.1.10 dst=10.77.0.3 type=0 code=0 id=1 mark=0 use=1
            """;
        Assert.That(ConntrackDrain.Live(output), Is.EqualTo(3));
        Assert.That(ConntrackDrain.Live(""), Is.Zero);
    }

    // Real lines of `conntrack -L -f ipv4 -d/-s 10.10.1.10` on the source host (DrainTests, WebServerMigrationTests).
    const string Established = "tcp      6 431999 ESTABLISHED src=10.77.0.3 dst=10.10.1.10 sport=49502 dport=7000 src=10.10.1.10 dst=10.77.0.3 sport=7000 dport=49502 [ASSURED] mark=0 use=1";
    const string TimeWait = "tcp      6 101 TIME_WAIT src=10.77.0.3 dst=10.10.1.10 sport=56506 dport=80 src=10.10.1.10 dst=10.77.0.3 sport=80 dport=56506 [ASSURED] mark=0 use=1";
    const string Close = "tcp      6 9 CLOSE src=10.10.1.10 dst=10.77.0.3 sport=80 dport=59210 src=10.77.0.3 dst=10.10.1.10 sport=59210 dport=80 [ASSURED] mark=0 use=1";
    const string PickedUpOneWay = "tcp      6 299 ESTABLISHED src=10.10.1.10 dst=10.77.0.3 sport=8080 dport=59828 [UNREPLIED] src=10.77.0.3 dst=10.10.1.10 sport=59828 dport=8080 mark=0 use=1";
    const string CloseWait = "tcp      6 59 CLOSE_WAIT src=10.77.0.3 dst=10.10.1.10 sport=59830 dport=8080 src=10.10.1.10 dst=10.77.0.3 sport=8080 dport=59830 mark=0 use=1";
    const string SynSent = "tcp      6 119 SYN_SENT src=10.77.0.3 dst=10.10.1.10 sport=45520 dport=80 [UNREPLIED] src=10.10.1.10 dst=10.77.0.3 sport=80 dport=45520 mark=0 use=1";

    static string At(string line, int remaining) =>
        System.Text.RegularExpressions.Regex.Replace(line, @"^(\w+\s+\d+) \d+ ", $"$1 {remaining} ");

    [Test]
    public void Conntrack_lines_are_parsed_and_classified()
    {
        var all = ConntrackEntry.Parse(string.Join('\n', Established, TimeWait, Close, PickedUpOneWay, CloseWait, SynSent,
            "conntrack v1.4.7 (conntrack-tools): 6 flow entries have been shown.", "")).ToList();
        Assert.That(all.Select(e => (e.State, e.Remaining, e.Unreplied, e.Liveness)), Is.EqualTo(new (string?, int, bool, ConntrackLiveness)[]
        {
            ("ESTABLISHED", 431999, false, ConntrackLiveness.Live),
            ("TIME_WAIT", 101, false, ConntrackLiveness.Done),
            ("CLOSE", 9, false, ConntrackLiveness.Done),
            ("ESTABLISHED", 299, true, ConntrackLiveness.WhileActive),
            ("CLOSE_WAIT", 59, false, ConntrackLiveness.WhileActive),
            ("SYN_SENT", 119, true, ConntrackLiveness.WhileActive),
        }));
        Assert.That(all[3].Key, Is.EqualTo("tcp src=10.10.1.10 dst=10.77.0.3 sport=8080 dport=59828"), "the original direction's tuple");
        Assert.That(all[3].ToString(), Is.EqualTo("ESTABLISHED src=10.10.1.10 dst=10.77.0.3 sport=8080 dport=59828 [UNREPLIED]"));
        Assert.That(all[0].Key, Is.Not.EqualTo(ConntrackEntry.Parse(At(Established, 5).Replace("sport=49502", "sport=49503")).Single().Key));
        Assert.That(ConntrackEntry.Parse(At(Established, 5)).Single().Key, Is.EqualTo(all[0].Key), "the key leaves out the timeout");
    }

    [Test]
    public void Half_open_and_closing_connections_keep_the_tunnel_only_while_packets_move_them()
    {
        var drain = new ConntrackDrain(TimeSpan.FromSeconds(10));
        string Poll(params string[] lines) => string.Join('\n', lines);

        // first sight: everything that may carry traffic counts
        var p = drain.Count(Poll(Established, TimeWait, PickedUpOneWay, CloseWait, SynSent));
        Assert.That((p.Live, p.Stale.Count), Is.EqualTo((4, 0)));
        // 9 s without a packet: still counted
        p = drain.Count(Poll(At(Established, 431990), At(PickedUpOneWay, 290), At(CloseWait, 50), At(SynSent, 110)));
        Assert.That((p.Live, p.Stale.Count), Is.EqualTo((4, 0)));
        // 10 s: the one-way pickup and the CLOSE_WAIT are stale; the SYN was sent again (its timeout back up)
        p = drain.Count(Poll(At(Established, 431989), At(PickedUpOneWay, 289), At(CloseWait, 49), At(SynSent, 119)));
        Assert.That(p.Live, Is.EqualTo(2));
        Assert.That(p.Stale.Select(e => e.State), Is.EqualTo(new[] { "ESTABLISHED", "CLOSE_WAIT" }));
        // a packet moves the CLOSE_WAIT on again (data in the open direction): it counts again; the handshake
        // goes on (SYN_RECV: watched afresh); an established connection counts however long it is idle
        p = drain.Count(Poll(At(Established, 1000), At(PickedUpOneWay, 200), At(CloseWait, 60), SynSent.Replace("119 SYN_SENT", "59 SYN_RECV").Replace(" [UNREPLIED]", "")));
        Assert.That((p.Live, p.Stale.Count), Is.EqualTo((3, 1)));
        // the SYN_RECV gets no final ACK for 10 s: stale; an entry that went and came back is watched afresh
        p = drain.Count(Poll(SynSent.Replace("119 SYN_SENT", "49 SYN_RECV").Replace(" [UNREPLIED]", "")));
        Assert.That((p.Live, p.Stale.Count), Is.EqualTo((0, 1)));
        p = drain.Count(Poll(At(CloseWait, 30)));
        Assert.That((p.Live, p.Stale.Count), Is.EqualTo((1, 0)));
        Assert.That(drain.Count("").Live, Is.Zero);
    }

    [Test]
    public void Command_prefixes_parse_and_ssh_arguments_are_quoted()
    {
        Assert.That(CommandPrefixRunner.Parse("").Description, Is.EqualTo("local"));
        Assert.That(CommandPrefixRunner.Parse("ip netns exec x").Description, Is.EqualTo("ip netns exec x"));
        Assert.That(CommandPrefixRunner.Parse("ssh -o 'BatchMode yes' root@h").Description, Is.EqualTo("ssh -o BatchMode yes root@h"));
        Assert.That(CommandPrefixRunner.ShellQuote("10.0.0.1/32"), Is.EqualTo("10.0.0.1/32"));
        Assert.That(CommandPrefixRunner.ShellQuote("a b"), Is.EqualTo("'a b'"));
        Assert.That(CommandPrefixRunner.ShellQuote("it's"), Is.EqualTo("'it'\\''s'"));
        Assert.That(CommandPrefixRunner.ShellQuote(""), Is.EqualTo("''"));
    }

    [Test, CancelAfter(10_000)]
    public async Task A_remote_shell_prefix_gets_one_quoted_command(CancellationToken ct)
    {
        // "sh -c" stands in for ssh: both hand one string to a shell.
        var runner = new CommandPrefixRunner(["sh", "-c"], remoteShell: true);
        var r = await runner.RunAsync("printf", ["%s|", "a b", "it's", "$HOME"], null, ct);
        Assert.That(r.StandardOutput, Is.EqualTo("a b|it's|$HOME|"));
    }

    [Test, CancelAfter(10_000)]
    public async Task None_redirector_does_nothing_and_reports_none(CancellationToken ct)
    {
        var none = new NoneRedirector();
        var r = await none.RedirectAsync(ct);
        Assert.That(r.Redirector, Is.EqualTo("none"));
        Assert.That(r.Succeeded, Is.True);
    }
}
