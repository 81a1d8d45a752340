using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using BlockMigrate.TestSupport;
using NUnit.Framework;

namespace BlockMigrate.Network.Tests;

/// <summary>
/// When the tunnel goes (docs/network.md, "Drain"), on hosts made of namespaces (<see cref="TestNetwork"/>).
/// The source host's conntrack starts tracking the old address at prepare, in the middle of whatever the
/// VM's clients are doing. A connection that was closing at that instant is picked up half-way
/// (<c>nf_conntrack_tcp_loose</c>) and its entry is left in a state that waits for a packet already sent
/// before tracking began: ESTABLISHED [UNREPLIED] for 300 s, or CLOSE_WAIT for 60 s. Such entries used to
/// keep the tunnel up for minutes after the last real connection had ended (issue 15: migrate waited
/// 40 s and more than 90 s in WebServerMigrationTests). This builds both deterministically, HTTP/1.0 style
/// (the VM's hello service closes first): the VM's FIN passes before prepare, the client's close after.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class DrainTests
{
    readonly TestNetwork _net = new();
    VmServices _vm = null!;

    [OneTimeSetUp]
    public async Task CreateHosts()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await _net.CreateAsync(cts.Token);
        _vm = VmServices.Start(_net.Vm);
        for (int i = 0; ; i++)
        {
            using var s = NetnsSocket.Tcp(_net.Cli);
            using var t = CancellationTokenSource.CreateLinkedTokenSource(cts.Token);
            t.CancelAfter(500);
            try { await s.ConnectAsync(new IPEndPoint(TestNetwork.Old, VmServices.HelloPort), t.Token); return; }
            catch (Exception) when (i < 40) { await Task.Delay(100, cts.Token); }
        }
    }

    [OneTimeTearDown]
    public async Task DestroyHosts()
    {
        if (_vm is not null) await _vm.DisposeAsync();
        await _net.DestroyAsync();
    }

    /// <summary>A connection to the hello service, read to its end: the VM has sent its FIN and the client
    /// has acknowledged it; the client has not closed yet.</summary>
    async Task<Socket> HalfClosedByTheVmAsync(CancellationToken ct)
    {
        var s = NetnsSocket.Tcp(_net.Cli);
        await s.ConnectAsync(new IPEndPoint(TestNetwork.Old, VmServices.HelloPort), ct);
        var buf = new byte[256];
        while (await s.ReceiveAsync(buf, SocketFlags.None, ct) > 0) { }
        return s;
    }

    async Task<string> SourceConntrackAsync(CancellationToken ct) =>
        (await Sh.TryAsync($"conntrack -L -f ipv4 -d {TestNetwork.Old}; conntrack -L -f ipv4 -s {TestNetwork.Old}", _net.Src, ct)).StandardOutput;

    /// <summary>The drain trusts the source's conntrack to see every tunnelled connection both ways. A reply the
    /// destination sent straight to the client (the VM running before the destination's reply route was
    /// there) left the source's entry in SYN_SENT while the connection carried data through the tunnel. The
    /// reply route is now in place from prepare, taking only what the VM sends from the old address on its link.</summary>
    [Test, CancelAfter(60_000)]
    public async Task The_destination_sends_the_VMs_replies_into_the_tunnel_from_prepare_on(CancellationToken ct)
    {
        var before = (Src: await HostSnapshot.TakeAsync(_net.Src, ct), Dst: await HostSnapshot.TakeAsync(_net.Dst, ct));
        await using var tunnel = new TunnelRedirector(Options(tunnelId: 22));
        var prepared = await tunnel.PrepareAsync(ct);
        Assert.That(prepared.Errors, Is.Empty, () => prepared.ToJson());
        var fromVm = await Sh.RunAsync($"ip route get 10.77.0.3 from {TestNetwork.Old} iif vmbr0", _net.Dst, ct);
        var fromLan = await Sh.RunAsync($"ip route get 10.77.0.3 from {TestNetwork.Old} iif eth0", _net.Dst, ct);
        var ownTraffic = await Sh.RunAsync($"ip route get {TestNetwork.Old}", _net.Src, ct);
        await tunnel.AbortAsync(ct);
        Assert.That(fromVm, Does.Contain("dev bmtun22"), "a reply from the old address on the VM's link goes into the tunnel");
        Assert.That(fromLan, Does.Not.Contain("bmtun22"), "traffic from the old address that does not come from the VM's link is not touched");
        Assert.That(ownTraffic, Does.Not.Contain("bmtun22"), "the source sends nothing into the tunnel before the switch");
        SnapshotAssert.Same(before.Src, await HostSnapshot.TakeAsync(_net.Src, ct), "source host's network configuration");
        SnapshotAssert.Same(before.Dst, await HostSnapshot.TakeAsync(_net.Dst, ct), "destination host's network configuration");
    }

    sealed class LineLogger(System.Collections.Concurrent.ConcurrentQueue<string> lines) : Microsoft.Extensions.Logging.ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => logLevel >= Microsoft.Extensions.Logging.LogLevel.Information;
        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception,
            Func<TState, Exception?, string> formatter) => lines.Enqueue(formatter(state, exception));
    }

    RedirectionOptions Options(int tunnelId) => new()
    {
        VmName = "web",
        OldAddress = TestNetwork.Old,
        NewAddresses = [TestNetwork.New],
        TunnelRemote = TestNetwork.DestinationHost,
        TunnelId = tunnelId,
        TunnelMinimumHold = TimeSpan.FromSeconds(1),
        DrainPollInterval = TimeSpan.FromMilliseconds(250),
        TunnelTimeout = TimeSpan.FromSeconds(60),
        SourceCommand = $"ip netns exec {_net.Src}",
        DestinationCommand = $"ip netns exec {_net.Dst}",
    };

    [Test, CancelAfter(90_000)]
    public async Task Connections_that_were_closing_when_tracking_started_do_not_hold_the_tunnel(CancellationToken ct)
    {
        var before = (Src: await HostSnapshot.TakeAsync(_net.Src, ct), Dst: await HostSnapshot.TakeAsync(_net.Dst, ct));
        using var lonelyAck = await HalfClosedByTheVmAsync(ct);
        using var closeWait = await HalfClosedByTheVmAsync(ct);
        var lonelyPort = ((IPEndPoint)lonelyAck.LocalEndPoint!).Port;
        var closeWaitPort = ((IPEndPoint)closeWait.LocalEndPoint!).Port;
        var o = Options(tunnelId: 21);
        var log = new System.Collections.Concurrent.ConcurrentQueue<string>();
        await using var tunnel = new TunnelRedirector(o, new LineLogger(log));
        var prepared = await tunnel.PrepareAsync(ct);   // the source host's conntrack starts tracking the old address
        Assert.That(prepared.Errors, Is.Empty, () => prepared.ToJson());

        // the client closes: its FIN creates no entry; the VM's ACK of it is picked up as a new connection,
        // ESTABLISHED [UNREPLIED], VM → client
        lonelyAck.Close();
        // the client still sends (the VM only shut down its sending side), then closes: picked up at that
        // data as ESTABLISHED, the client's FIN makes it FIN_WAIT, the VM's ACK CLOSE_WAIT, waiting for the
        // VM's FIN, which went before tracking began
        await closeWait.SendAsync(Encoding.ASCII.GetBytes("late\n"), SocketFlags.None, ct);
        await Task.Delay(100, ct);
        closeWait.Close();
        await Task.Delay(300, ct);
        var table = await SourceConntrackAsync(ct);
        TestContext.Out.WriteLine(table);
        Assert.That(table, Does.Match($@"ESTABLISHED src={TestNetwork.Old} dst=10\.77\.0\.3 sport={VmServices.HelloPort} dport={lonelyPort} \[UNREPLIED\]"),
            "the premise: the VM's last ACK was picked up as a connection of its own");
        Assert.That(table, Does.Match($@"CLOSE_WAIT src=10\.77\.0\.3 dst={TestNetwork.Old} sport={closeWaitPort} dport={VmServices.HelloPort}"),
            "the premise: the other connection waits in CLOSE_WAIT for a FIN that went before tracking");

        // a real connection through the migration keeps the tunnel, those two do not
        var clock = Stopwatch.StartNew();
        await using var longLived = await LongLivedClient.ConnectAsync(_net.Cli, TestNetwork.Old, clock, ct);
        await Task.Delay(500, ct);
        await _net.MigrateVmAsync(ct);
        var up = await tunnel.RedirectAsync(ct);
        Assert.That(up.Errors, Is.Empty, () => up.ToJson());
        var teardown = tunnel.WaitDrainedAndTeardownAsync(ct);
        await Task.Delay(3000, ct);
        Assert.That(teardown.IsCompleted, Is.False, "the tunnel went while a connection was still open");
        Assert.That(longLived.Error, Is.Null, () => $"the long-lived connection broke: {longLived.Error}");
        await longLived.CloseAsync(ct);
        var closed = clock.Elapsed;

        RedirectionReport final;
        try { final = await teardown.WaitAsync(o.DrainStaleAfter + TimeSpan.FromSeconds(10), ct); }
        catch (TimeoutException)
        {
            Assert.Fail($"the tunnel still waits {o.DrainStaleAfter.TotalSeconds + 10:0} s after the last connection closed; the source's conntrack:\n{await SourceConntrackAsync(ct)}");
            throw;
        }
        var after = clock.Elapsed - closed;
        TestContext.Out.WriteLine($"tunnel removed {after.TotalMilliseconds:0} ms after the last connection closed");
        Assert.That(final.TunnelRemovedBecause, Is.EqualTo(TunnelRemovalReason.Drained), () => final.ToJson());
        Assert.That(final.Errors, Is.Empty, () => final.ToJson());
        Assert.That(after, Is.LessThan(o.DrainStaleAfter + TimeSpan.FromSeconds(2)), "the tunnel goes soon after the last connection");
        // the log says which entries it stopped waiting for, and why
        Assert.That(log, Has.One.EqualTo($"tunnel bmtun21: not waiting for ESTABLISHED src={TestNetwork.Old} dst=10.77.0.3 sport={VmServices.HelloPort} dport={lonelyPort} [UNREPLIED]: no packet for 10 s (a handshake or close that no longer goes on)"));
        Assert.That(log, Has.One.EqualTo($"tunnel bmtun21: not waiting for CLOSE_WAIT src=10.77.0.3 dst={TestNetwork.Old} sport={closeWaitPort} dport={VmServices.HelloPort}: no packet for 10 s (a handshake or close that no longer goes on)"));
        SnapshotAssert.Same(before.Src, await HostSnapshot.TakeAsync(_net.Src, ct), "source host's network configuration");
        SnapshotAssert.Same(before.Dst, await HostSnapshot.TakeAsync(_net.Dst, ct), "destination host's network configuration");
    }
}
