using BlockMigrate.TestSupport;
using System.Diagnostics;
using System.Text.Json;
using NUnit.Framework;

namespace BlockMigrate.Network.Tests;

/// <summary>
/// The tunnel and DNS together on hosts made of network namespaces (<see cref="TestNetwork"/>), with a
/// real BIND 9 in the client namespace: clients keep working across a simulated migration, and every
/// trace of the redirection goes away afterwards, also when aborted half-way.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class TunnelTests
{
    readonly TestNetwork _net = new();
    Bind9Server _bind = null!;
    VmServices _vm = null!;

    [OneTimeSetUp]
    public async Task CreateHosts()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await _net.CreateAsync(cts.Token);
        _bind = await Bind9Server.StartAsync(_net.Cli, "vm.test", $"web 1 IN A {TestNetwork.Old}", cts.Token);
        _vm = VmServices.Start(_net.Vm);
        await WaitReachableAsync(cts.Token);
    }

    // The bridges' ports come up asynchronously: wait until the client reaches the VM.
    async Task WaitReachableAsync(CancellationToken ct)
    {
        for (int i = 0; ; i++)
        {
            using var s = NetnsSocket.Tcp(_net.Cli);
            using var t = CancellationTokenSource.CreateLinkedTokenSource(ct);
            t.CancelAfter(500);
            try { await s.ConnectAsync(new System.Net.IPEndPoint(TestNetwork.Old, VmServices.HelloPort), t.Token); return; }
            catch (Exception) when (i < 40 && !ct.IsCancellationRequested) { await Task.Delay(100, ct); }
        }
    }

    [OneTimeTearDown]
    public async Task DestroyHosts()
    {
        if (_vm is not null) await _vm.DisposeAsync();
        if (_bind is not null) await _bind.DisposeAsync();
        await _net.DestroyAsync();
    }

    RedirectionOptions Options(int tunnelId) => new()
    {
        VmName = "web",
        DnsName = "web.vm.test",
        Zone = "vm.test",
        DnsServer = $"127.0.0.1:{Bind9Server.Port}",
        KeyFile = _bind.KeyFile,
        DnsTtl = 1,
        OldAddress = TestNetwork.Old,
        NewAddresses = [TestNetwork.New],
        TunnelRemote = TestNetwork.DestinationHost,
        TunnelId = tunnelId,
        TunnelMinimumHold = TimeSpan.FromSeconds(1),
        DrainPollInterval = TimeSpan.FromMilliseconds(250),
        TunnelTimeout = TimeSpan.FromSeconds(60),
        SourceCommand = $"ip netns exec {_net.Src}",
        DestinationCommand = $"ip netns exec {_net.Dst}",
        DnsCommand = $"ip netns exec {_net.Cli}",
    };

    async Task<(string Src, string Dst)> SnapshotAsync(CancellationToken ct) =>
        (await HostSnapshot.TakeAsync(_net.Src, ct), await HostSnapshot.TakeAsync(_net.Dst, ct));

    [Test, Order(1), CancelAfter(60_000)]
    public async Task Connections_survive_migration_and_the_tunnel_goes_when_they_drain(CancellationToken ct)
    {
        var before = await SnapshotAsync(ct);
        var clock = Stopwatch.StartNew();
        var redirector = Redirectors.Create(Options(tunnelId: 7) with { DnsPrepareTtl = 1 });
        Assert.That(redirector, Is.InstanceOf<CompositeRedirector>());

        var prepared = await redirector.PrepareAsync(ct);
        Assert.That(prepared.Errors, Is.Empty, () => prepared.ToJson());

        await using var longLived = await LongLivedClient.ConnectAsync(_net.Cli, TestNetwork.Old, clock, ct);
        await using var shortLoop = ShortRequestClient.Start(_net.Cli, "web.vm.test", clock);
        await Task.Delay(1500, ct);

        var moved = clock.Elapsed;
        await _net.MigrateVmAsync(ct);
        var report = await redirector.RedirectAsync(ct);
        var redirected = clock.Elapsed;
        TestContext.Out.WriteLine($"VM moved at {moved.TotalMilliseconds:0} ms, tunnel+DNS done {(redirected - moved).TotalMilliseconds:0} ms later");
        Assert.That(report.Errors, Is.Empty, () => report.ToJson());
        Assert.That(report.TunnelKind, Is.EqualTo(TunnelKind.Vxlan));
        Assert.That(report.TunnelUpAt, Is.Not.Null);
        Assert.That(report.DnsChangedAt, Is.GreaterThanOrEqualTo(report.TunnelUpAt), "paper's order: tunnel, then DNS");
        Assert.That(report.ConnectionsAtTunnelUp, Is.GreaterThanOrEqualTo(1), "conntrack sees the long-lived connection");

        var repliesAtSwitch = await RepliesSeenBySourceAsync(ct);
        await Task.Delay(3000, ct);
        Assert.That(await RepliesSeenBySourceAsync(ct), Is.GreaterThan(repliesAtSwitch + 50),
            "the VM's replies from the old address come back through the tunnel and leave the source host, as before the move");
        await shortLoop.DisposeAsync();
        var requests = shortLoop.Requests;
        foreach (var r in requests.Where(r => r.Error is not null))
            TestContext.Out.WriteLine($"failed at {r.At.TotalMilliseconds:0} ms: {r.Error}");
        Assert.That(requests.Where(r => r.Error is not null), Is.Empty, "short requests failed");
        Assert.That(requests.Count(r => r.At < moved && r.ServedBy == TestNetwork.Old.ToString()), Is.GreaterThan(5));
        var dnsChangedAt = redirected;   // the update is the last thing RedirectAsync does
        var late = requests.Where(r => r.At > dnsChangedAt + TimeSpan.FromSeconds(1)).ToList();
        Assert.That(late, Has.Count.GreaterThan(5));
        Assert.That(late.Select(r => r.ServedBy), Has.All.EqualTo(TestNetwork.New.ToString()), "after the update, new connections reach the new address");
        TestContext.Out.WriteLine($"short requests: {requests.Count}, via old {requests.Count(r => r.ServedBy == TestNetwork.Old.ToString())}, via new {requests.Count(r => r.ServedBy == TestNetwork.New.ToString())}");

        Assert.That(longLived.Error, Is.Null, () => $"long-lived connection broke: {longLived.Error}");
        Assert.That(longLived.ExchangesSince(redirected + TimeSpan.FromSeconds(1)), Is.GreaterThan(20), "long-lived connection goes on through the tunnel");
        TestContext.Out.WriteLine($"long-lived connection: longest gap between echoes {longLived.LongestGap.TotalMilliseconds:0} ms");

        // The long-lived connection keeps the tunnel: the drain wait must not finish while it is open.
        var teardown = redirector.WaitDrainedAndTeardownAsync(ct);
        await Task.Delay(2500, ct);
        Assert.That(teardown.IsCompleted, Is.False, "tunnel removed while a connection was still open");
        await Sh.RunAsync($"ip link show bmtun7 >/dev/null", _net.Src, ct);

        await longLived.CloseAsync(ct);
        var closed = clock.Elapsed;
        var final = await teardown.WaitAsync(TimeSpan.FromSeconds(15), ct);
        TestContext.Out.WriteLine($"tunnel removed {(clock.Elapsed - closed).TotalMilliseconds:0} ms after the connection closed");
        TestContext.Out.WriteLine(final.ToJson());
        Assert.That(final.Errors, Is.Empty, () => final.ToJson());
        Assert.That(final.TunnelRemovedBecause, Is.EqualTo(TunnelRemovalReason.Drained));
        Assert.That(final.ConnectionsAtRemoval, Is.Zero);

        var after = await SnapshotAsync(ct);
        SnapshotAssert.Same(before.Src, after.Src, "source host's network configuration");
        SnapshotAssert.Same(before.Dst, after.Dst, "destination host's network configuration");

        using var json = JsonDocument.Parse(final.ToJson());
        foreach (var field in new[] { "tunnelUpAt", "dnsChangedAt", "tunnelRemovedAt", "tunnelRemovedBecause", "tunnelKind" })
            Assert.That(json.RootElement.TryGetProperty(field, out _), Is.True, field);
        Assert.That(json.RootElement.GetProperty("tunnelRemovedBecause").GetString(), Is.EqualTo("Drained"));
    }

    // Packets from the old address forwarded by the source host (our nft chain's counter).
    async Task<long> RepliesSeenBySourceAsync(CancellationToken ct)
    {
        var chain = await Sh.RunAsync("nft list chain inet blockmigrate t7", _net.Src, ct);
        var m = System.Text.RegularExpressions.Regex.Match(chain, $@"ip saddr {System.Text.RegularExpressions.Regex.Escape(TestNetwork.Old.ToString())} .*counter packets (\d+)");
        Assert.That(m.Success, Is.True, chain);
        return long.Parse(m.Groups[1].Value);
    }

    [Test, Order(2), CancelAfter(60_000)]
    public async Task Abort_while_waiting_for_drain_leaves_nothing_behind(CancellationToken ct)
    {
        var before = await SnapshotAsync(ct);
        var o = Options(tunnelId: 8) with { Tunnel = TunnelKind.Auto, DnsName = null, TunnelMinimumHold = TimeSpan.FromSeconds(50) };
        var tunnel = new TunnelRedirector(o);
        await tunnel.PrepareAsync(ct);
        var up = await tunnel.RedirectAsync(ct);
        Assert.That(up.Errors, Is.Empty, () => up.ToJson());
        Assert.That(await Sh.RunAsync("ip rule show; ip link show bmtun8", _net.Src, ct), Does.Contain("bmtun8").And.Contain($"to {TestNetwork.Old}"));
        Assert.That(await Sh.RunAsync("nft list table inet blockmigrate", _net.Src, ct), Does.Contain("chain t8"));
        Assert.That(await Sh.RunAsync("ip rule show", _net.Dst, ct), Does.Contain($"from {TestNetwork.Old}"));

        var wait = tunnel.WaitDrainedAndTeardownAsync(ct);
        await Task.Delay(500, ct);
        var aborted = await tunnel.AbortAsync(ct);
        var waited = await wait.WaitAsync(TimeSpan.FromSeconds(10), ct);

        Assert.That(aborted.TunnelRemovedBecause, Is.EqualTo(TunnelRemovalReason.Aborted));
        Assert.That(waited.TunnelRemovedBecause, Is.EqualTo(TunnelRemovalReason.Aborted));
        Assert.That(aborted.Errors, Is.Empty, () => aborted.ToJson());
        var after = await SnapshotAsync(ct);
        SnapshotAssert.Same(before.Src, after.Src, "source host's network configuration");
        SnapshotAssert.Same(before.Dst, after.Dst, "destination host's network configuration");
    }

    [Test, Order(3), CancelAfter(60_000)]
    public async Task Failure_half_way_through_the_switch_undoes_the_destination_side(CancellationToken ct)
    {
        var before = await SnapshotAsync(ct);
        var o = Options(tunnelId: 9) with { DnsName = null };
        var source = new FaultyRunner(CommandPrefixRunner.InNamespace(_net.Src),
            (p, a, stdin) => p == "ip" && a.Contains("-batch") && stdin?.Contains("route add") == true,   // the switch (the rules came at prepare)
            cmd => new HostCommandResult(cmd, 2, "", "RTNETLINK answers: Operation not permitted (injected)"));
        var tunnel = new TunnelRedirector(o, source, CommandPrefixRunner.InNamespace(_net.Dst));

        var report = await tunnel.RedirectAsync(ct);   // prepares on the way

        Assert.That(report.TunnelRemovedBecause, Is.EqualTo(TunnelRemovalReason.SetupFailed));
        Assert.That(report.TunnelUpAt, Is.Null);
        Assert.That(report.Errors.Single().Message, Does.Contain("source host").And.Contain("injected"));
        var after = await SnapshotAsync(ct);
        SnapshotAssert.Same(before.Src, after.Src, "source host's network configuration");
        SnapshotAssert.Same(before.Dst, after.Dst, "destination host's network configuration");
    }

    [Test, Order(4), CancelAfter(60_000)]
    public async Task Cancelled_in_the_middle_of_redirect_then_aborted_leaves_nothing_behind(CancellationToken ct)
    {
        var before = await SnapshotAsync(ct);
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var o = Options(tunnelId: 10) with { DnsName = null };
        var source = new FaultyRunner(CommandPrefixRunner.InNamespace(_net.Src),
            (p, a, stdin) => p == "ip" && a.Contains("-batch") && stdin?.Contains("route add") == true,   // the switch (the rules came at prepare)
            _ => { cancel.Cancel(); throw new OperationCanceledException(cancel.Token); });
        var tunnel = new TunnelRedirector(o, source, CommandPrefixRunner.InNamespace(_net.Dst));
        await tunnel.PrepareAsync(ct);

        Assert.That(async () => await tunnel.RedirectAsync(cancel.Token), Throws.InstanceOf<OperationCanceledException>());
        Assert.That(await Sh.RunAsync("ip rule show", _net.Dst, ct), Does.Contain($"to {TestNetwork.Old}"), "destination side was set up before the cancel");

        var report = await tunnel.AbortAsync(ct);
        Assert.That(report.Errors, Is.Empty, () => report.ToJson());
        Assert.That(report.TunnelRemovedBecause, Is.EqualTo(TunnelRemovalReason.Aborted));
        var after = await SnapshotAsync(ct);
        SnapshotAssert.Same(before.Src, after.Src, "source host's network configuration");
        SnapshotAssert.Same(before.Dst, after.Dst, "destination host's network configuration");
    }

    [Test, Order(6), CancelAfter(60_000)]
    public async Task Tunnel_goes_after_the_timeout_even_with_a_connection_open(CancellationToken ct)
    {
        if (!_net.VmAtDestination) await _net.MigrateVmAsync(ct);
        var before = await SnapshotAsync(ct);
        var o = Options(tunnelId: 12) with { DnsName = null, TunnelTimeout = TimeSpan.FromSeconds(3), TunnelMinimumHold = TimeSpan.Zero };
        var tunnel = new TunnelRedirector(o);
        var up = await tunnel.RedirectAsync(ct);
        Assert.That(up.Errors, Is.Empty, () => up.ToJson());
        await using var open = await LongLivedClient.ConnectAsync(_net.Cli, TestNetwork.Old, Stopwatch.StartNew(), ct);
        await Task.Delay(300, ct);
        Assert.That(open.Error, Is.Null);

        var report = await tunnel.WaitDrainedAndTeardownAsync(ct);

        Assert.That(report.TunnelRemovedBecause, Is.EqualTo(TunnelRemovalReason.Timeout), () => report.ToJson());
        Assert.That(report.ConnectionsAtRemoval, Is.GreaterThanOrEqualTo(1));
        Assert.That(report.TunnelRemovedAt - report.TunnelUpAt, Is.InRange(TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(6)));
        var after = await SnapshotAsync(ct);
        SnapshotAssert.Same(before.Src, after.Src, "source host's network configuration");
        SnapshotAssert.Same(before.Dst, after.Dst, "destination host's network configuration");
    }

    [Test, Order(5), CancelAfter(60_000)]
    public async Task Gre_is_used_when_the_kernel_has_it_else_vxlan_and_the_report_says_why(CancellationToken ct)
    {
        bool kernelHasGre = (await Sh.TryAsync("unshare --net ip link add bmprobe0 type gre local 127.0.0.1 remote 127.0.0.2", ct: ct)).Succeeded;
        var before = await SnapshotAsync(ct);
        var tunnel = new TunnelRedirector(Options(tunnelId: 11) with { DnsName = null, Tunnel = TunnelKind.Gre });
        var report = await tunnel.PrepareAsync(ct);
        var link = await Sh.RunAsync("ip -d link show bmtun11", _net.Src, ct);
        await tunnel.AbortAsync(ct);

        Assert.That(report.Errors, Is.Empty, () => report.ToJson());
        if (kernelHasGre)
        {
            Assert.That(report.TunnelKind, Is.EqualTo(TunnelKind.Gre));
            Assert.That(link, Does.Contain("gre remote 10.77.0.2"));
        }
        else
        {
            Assert.That(report.TunnelKind, Is.EqualTo(TunnelKind.Vxlan));
            Assert.That(report.TunnelKindReason, Does.Contain("gre not in the kernel"));
            Assert.That(link, Does.Contain("vxlan id 11599883 remote 10.77.0.2 local 10.77.0.1"));
        }
        var after = await SnapshotAsync(ct);
        SnapshotAssert.Same(before.Src, after.Src, "source host's network configuration");
        SnapshotAssert.Same(before.Dst, after.Dst, "destination host's network configuration");
    }
}
