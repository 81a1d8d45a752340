using BlockMigrate.TestSupport;
using System.Net;
using NUnit.Framework;

namespace BlockMigrate.Network.Tests;

/// <summary>Signed RFC 2136 updates against a real BIND 9 in a namespace of our own.</summary>
[TestFixture]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
[NonParallelizable]
public sealed class DynamicDnsTests
{
    readonly string _ns = $"bmn{Environment.ProcessId}-dns";
    Bind9Server _bind = null!;

    [OneTimeSetUp]
    public async Task StartBind()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await Sh.RunAsync($"ip netns add {_ns} && ip -n {_ns} link set lo up", ct: cts.Token);
        var records = string.Join('\n', Enumerable.Range(1, 8).Select(i => $"web{i} 300 IN A 10.77.0.1"));
        _bind = await Bind9Server.StartAsync(_ns, "vm.test", records, cts.Token);
    }

    [OneTimeTearDown]
    public async Task StopBind()
    {
        if (_bind is not null) await _bind.DisposeAsync();
        await Sh.TryAsync($"ip netns del {_ns}");
    }

    RedirectionOptions Options(string name, string? keyFile) => new()
    {
        VmName = name,
        DnsName = $"{name}.vm.test",
        Zone = "vm.test",
        DnsServer = $"127.0.0.1:{Bind9Server.Port}",
        KeyFile = keyFile,
        DnsTtl = 7,
        NewAddresses = [IPAddress.Parse("10.77.0.2"), IPAddress.Parse("fd00::2")],
        Tunnel = TunnelKind.None,
    };

    DynamicDnsRedirector Redirector(RedirectionOptions o) => new(o, CommandPrefixRunner.InNamespace(_ns));

    [Test, CancelAfter(30_000)]
    public async Task Signed_update_replaces_A_and_AAAA_with_the_new_addresses(CancellationToken ct)
    {
        var dns = Redirector(Options("web1", _bind.KeyFile));
        var before = DateTimeOffset.UtcNow;
        var report = await dns.RedirectAsync(ct);
        TestContext.Out.WriteLine(report.ToJson());

        Assert.That(report.Errors, Is.Empty, () => report.ToJson());
        Assert.That(report.DnsStatus, Is.EqualTo(DnsUpdateStatus.Updated));
        Assert.That(report.DnsChangedAt, Is.GreaterThanOrEqualTo(before));
        Assert.That(await _bind.DigShortAsync("web1.vm.test", "A", ct), Is.EqualTo(new[] { "10.77.0.2" }));
        Assert.That(await _bind.DigShortAsync("web1.vm.test", "AAAA", ct), Is.EqualTo(new[] { "fd00::2" }));
        Assert.That(await _bind.DigAsync("web1.vm.test", "A", ct), Does.Match(@"^web1\.vm\.test\.\s+7\s+IN\s+A\s+10\.77\.0\.2$"));
    }

    [Test, CancelAfter(30_000)]
    public async Task Prepare_lowers_the_TTL_and_abort_before_switchover_restores_it(CancellationToken ct)
    {
        var dns = Redirector(Options("web2", _bind.KeyFile) with { DnsPrepareTtl = 2 });
        var report = await dns.PrepareAsync(ct);

        Assert.That(report.Errors, Is.Empty, () => report.ToJson());
        Assert.That(report.DnsPreviousTtl, Is.EqualTo(300));
        Assert.That(report.DnsPreparedTtl, Is.EqualTo(2));
        Assert.That(await _bind.DigAsync("web2.vm.test", "A", ct), Does.Match(@"\s2\s+IN\s+A\s+10\.77\.0\.1$"));

        report = await dns.AbortAsync(ct);
        Assert.That(report.Errors, Is.Empty, () => report.ToJson());
        Assert.That(await _bind.DigAsync("web2.vm.test", "A", ct), Does.Match(@"\s300\s+IN\s+A\s+10\.77\.0\.1$"));
    }

    [Test, CancelAfter(30_000)]
    public async Task Unsigned_update_is_refused_and_reported(CancellationToken ct)
    {
        var report = await Redirector(Options("web3", keyFile: null)).RedirectAsync(ct);
        TestContext.Out.WriteLine(report.ToJson());

        Assert.That(report.DnsStatus, Is.EqualTo(DnsUpdateStatus.Refused));
        Assert.That(report.DnsFailed, Is.True);
        Assert.That(report.DnsChangedAt, Is.Null);
        Assert.That(report.Errors, Has.Count.EqualTo(1));
        Assert.That(report.Errors[0].Message, Does.Contain("REFUSED").And.Not.Contain("\n"));
        Assert.That(await _bind.DigShortAsync("web3.vm.test", "A", ct), Is.EqualTo(new[] { "10.77.0.1" }));
    }

    [Test, CancelAfter(30_000)]
    public async Task Update_signed_with_another_key_of_the_same_name_is_rejected(CancellationToken ct)
    {
        var wrong = Path.Combine(_bind.Directory, "wrong.key");
        await _bind.NewKeyAsync(wrong, ct);
        Assert.That(await File.ReadAllTextAsync(wrong, ct), Does.Contain($"key \"{Bind9Server.KeyName}\""));

        var report = await Redirector(Options("web4", wrong)).RedirectAsync(ct);
        TestContext.Out.WriteLine(report.ToJson());

        Assert.That(report.DnsStatus, Is.EqualTo(DnsUpdateStatus.NotAuthorized), () => report.ToJson());
        Assert.That(report.Errors.Single().Message, Does.Contain("NOTAUTH(BADSIG)").And.Contain("secret differs"));
        Assert.That(await _bind.DigShortAsync("web4.vm.test", "A", ct), Is.EqualTo(new[] { "10.77.0.1" }));
    }

    [Test, CancelAfter(30_000)]
    public async Task Key_file_readable_by_others_is_refused_before_sending(CancellationToken ct)
    {
        var open = Path.Combine(_bind.Directory, "open.key");
        File.Copy(_bind.KeyFile, open, overwrite: true);
        File.SetUnixFileMode(open, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        var dns = Redirector(Options("web5", open));

        var prepared = await dns.PrepareAsync(ct);
        Assert.That(prepared.Errors.Single().Message, Does.Contain("mode 0644").And.Contain("chmod 600"));

        var report = await dns.RedirectAsync(ct);
        TestContext.Out.WriteLine(report.ToJson());
        Assert.That(report.DnsStatus, Is.EqualTo(DnsUpdateStatus.KeyRejected));
        Assert.That(await _bind.DigShortAsync("web5.vm.test", "A", ct), Is.EqualTo(new[] { "10.77.0.1" }));
    }

    [Test, CancelAfter(30_000)]
    public async Task Update_for_a_zone_the_server_does_not_serve_is_an_error(CancellationToken ct)
    {
        var o = Options("web6", _bind.KeyFile) with { DnsName = "web6.other.test", Zone = "other.test" };
        var report = await Redirector(o).RedirectAsync(ct);
        TestContext.Out.WriteLine(report.ToJson());

        Assert.That(report.DnsFailed, Is.True, () => report.ToJson());
        Assert.That(report.DnsStatus, Is.AnyOf(DnsUpdateStatus.NotAuthorized, DnsUpdateStatus.Refused));
        Assert.That(report.Errors.Single().Step, Is.EqualTo("dns"));
        Assert.That(report.Errors.Single().Message, Does.Contain("dns-zone"));
    }

    [Test, CancelAfter(30_000)]
    public async Task Unreachable_server_is_reported_as_unreachable(CancellationToken ct)
    {
        var o = Options("web7", _bind.KeyFile) with { DnsServer = "127.0.0.1:5399", DnsTimeout = TimeSpan.FromSeconds(1) };
        var report = await Redirector(o).RedirectAsync(ct);
        TestContext.Out.WriteLine(report.ToJson());

        Assert.That(report.DnsStatus, Is.EqualTo(DnsUpdateStatus.Unreachable), () => report.ToJson());
        Assert.That(report.DnsFailed, Is.True);
    }
}
