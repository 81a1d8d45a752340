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
        };
        var errors = bad.Validate();
        Assert.That(errors, Has.Count.EqualTo(8), string.Join("\n", errors));
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
        Assert.That(ConntrackCount.Live(output), Is.EqualTo(3));
        Assert.That(ConntrackCount.Live(""), Is.Zero);
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
