using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using BlockMigrate.TestSupport;
using NUnit.Framework;

namespace BlockMigrate.Network.Tests;

/// <summary>
/// The real <c>blockmigrate migrate --hypervisor none</c> run on the source host (namespace src) with a
/// tunnel and DNS, a real <c>receive --once</c> on the destination host (namespace dst), a real shim and
/// BIND (namespace cli): a long-lived connection to the old address survives; after it closes the CLI
/// removes the tunnel and exits; Ctrl-C while it waits removes the tunnel at once. Both hosts' network
/// configuration is as before. The VM's link moves to the destination when the CLI logs the commit.
/// </summary>
[TestFixture]
[NonParallelizable]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class CliTunnelTests
{
    readonly TestNetwork _net = new();
    Bind9Server _bind = null!;
    VmServices _vm = null!;
    TempDir _dir = null!;
    NbdkitServer _shim = null!;

    [SetUp]
    public async Task CreateHosts()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await _net.CreateAsync(cts.Token);
        _bind = await Bind9Server.StartAsync(_net.Cli, "vm.test", $"web 300 IN A {TestNetwork.Old}", cts.Token);
        _vm = VmServices.Start(_net.Vm);
        _dir = new TempDir("clitun");
        var image = _dir["vda.img"];
        using (var f = File.Create(image))
        {
            f.SetLength(16 << 20);
            f.Write(Encoding.ASCII.GetBytes(string.Concat(Enumerable.Range(0, 50000).Select(i => $"block {i}\n"))));
        }
        _shim = NbdkitServer.Start(_dir.Path, NbdkitServer.FilterArgs(image, _dir["vda.map"], null));
        for (var i = 0; !File.Exists(_dir["vda.map"]) && i < 100; i++)
        {
            await Tool.RunAsync("nbdinfo", ["--size", _shim.Uri], TimeSpan.FromSeconds(10));
            await Task.Delay(50, cts.Token);
        }
        for (int i = 0; ; i++)
        {
            using var s = NetnsSocket.Tcp(_net.Cli);
            using var t = CancellationTokenSource.CreateLinkedTokenSource(cts.Token);
            t.CancelAfter(500);
            try { await s.ConnectAsync(new System.Net.IPEndPoint(TestNetwork.Old, VmServices.HelloPort), t.Token); break; }
            catch (Exception) when (i < 40) { await Task.Delay(100, cts.Token); }
        }
    }

    [TearDown]
    public async Task DestroyHosts()
    {
        _shim?.Dispose();
        if (_vm is not null) await _vm.DisposeAsync();
        if (_bind is not null) await _bind.DisposeAsync();
        await _net.DestroyAsync();
        _dir?.Dispose();
    }

    /// <summary>receive --once in dst, then migrate in src; returns both, migrate running.</summary>
    async Task<(CliProcess Receiver, CliProcess Migrate)> StartAsync(int tunnelId, CancellationToken ct)
    {
        Directory.CreateDirectory(_dir["dst"]);
        var receiver = CliProcess.Start(_net.Dst, "receive", "--listen", $"{TestNetwork.DestinationHost}:0", "--image-dir", _dir["dst"],
            "--once", "--plaintext", "--gate-map-dir", _dir["dst/gates"]);
        var port = Regex.Match(await receiver.WaitForStdoutAsync(@"listening on \S+:(\d+)", ct), @":(\d+)$").Groups[1].Value;
        File.WriteAllText(_dir["web.vm"], $"""
            [network]
            vm-name = web
            tunnel-id = {tunnelId}
            dns-command = ip netns exec {_net.Cli}
            dns-ttl = 1
            """);
        var migrate = CliProcess.Start(_net.Src, "migrate", "--config", _dir["web.vm"], "--disk", $"vda={_dir["vda.img"]}:{_dir["vda.map"]}",
            "--to", $"{TestNetwork.DestinationHost}:{port}", "--plaintext", "--json", "--hypervisor", "none",
            "--dns-name", "web.vm.test", "--dns-zone", "vm.test", "--dns-server", $"127.0.0.1:{Bind9Server.Port}", "--dns-key", _bind.KeyFile,
            "--old-address", TestNetwork.Old.ToString(), "--new-address", TestNetwork.New.ToString(), "--tunnel", "vxlan",
            "--tunnel-remote", TestNetwork.DestinationHost.ToString(), "--destination-command", $"ip netns exec {_net.Dst}",
            "--tunnel-timeout", "60");
        // the VM resumes at the destination right after the hand-over
        await migrate.WaitForStderrAsync("committed: ", ct);
        await _net.MigrateVmAsync(ct);
        return (receiver, migrate);
    }

    async Task<(string Src, string Dst)> SnapshotAsync(CancellationToken ct) =>
        (await HostSnapshot.TakeAsync(_net.Src, ct), await HostSnapshot.TakeAsync(_net.Dst, ct));

    [Test, CancelAfter(120_000)]
    public async Task Migrate_keeps_an_open_connection_through_the_tunnel_and_removes_it_after_the_connection_closes(CancellationToken ct)
    {
        var before = await SnapshotAsync(ct);
        var clock = Stopwatch.StartNew();
        await using var longLived = await LongLivedClient.ConnectAsync(_net.Cli, TestNetwork.Old, clock, ct);
        var (receiver, migrate) = await StartAsync(tunnelId: 21, ct);
        using var r = receiver;
        using var m = migrate;
        var moved = clock.Elapsed;
        await migrate.WaitForStderrAsync("waiting until no connection to", ct);
        await Task.Delay(3000, ct);
        Assert.That(migrate.HasExited, Is.False, "the command waits while a connection to the old address is open");
        Assert.That(longLived.Error, Is.Null, () => $"long-lived connection broke: {longLived.Error}");
        Assert.That(longLived.ExchangesSince(moved + TimeSpan.FromSeconds(2)), Is.GreaterThan(20), "the connection goes on through the tunnel");
        Assert.That(await Shell.RunAsync("dig +short -p 5353 @127.0.0.1 web.vm.test A", _net.Cli, ct), Does.Contain(TestNetwork.New.ToString()));

        await longLived.CloseAsync(ct);
        Assert.That(await migrate.WaitForExitAsync(TimeSpan.FromSeconds(40), ct), Is.Zero, migrate.Stderr);
        Assert.That(await receiver.WaitForExitAsync(TimeSpan.FromSeconds(20), ct), Is.Zero, receiver.Stderr);
        var net = JsonDocument.Parse(migrate.Stdout).RootElement.GetProperty("network");
        TestContext.Out.WriteLine(net.ToString());
        Assert.Multiple(() =>
        {
            Assert.That(net.GetProperty("redirector").GetString(), Is.EqualTo("tunnel+dns"));
            Assert.That(net.GetProperty("tunnelRemovedBecause").GetString(), Is.EqualTo("Drained"));
            Assert.That(net.GetProperty("connectionsAtTunnelUp").GetInt32(), Is.GreaterThanOrEqualTo(1));
            Assert.That(net.GetProperty("dnsStatus").GetString(), Is.EqualTo("Updated"));
            Assert.That(net.GetProperty("errors").GetArrayLength(), Is.Zero);
        });
        var after = await SnapshotAsync(ct);
        SnapshotAssert.Same(before.Src, after.Src, "source host's network configuration");
        SnapshotAssert.Same(before.Dst, after.Dst, "destination host's network configuration");
    }

    [Test, CancelAfter(120_000)]
    public async Task Ctrl_C_while_waiting_for_the_drain_removes_the_tunnel_at_once(CancellationToken ct)
    {
        var before = await SnapshotAsync(ct);
        var clock = Stopwatch.StartNew();
        await using var longLived = await LongLivedClient.ConnectAsync(_net.Cli, TestNetwork.Old, clock, ct);
        var (receiver, migrate) = await StartAsync(tunnelId: 22, ct);
        using var r = receiver;
        using var m = migrate;
        await migrate.WaitForStderrAsync("waiting until no connection to", ct);
        Assert.That(await Shell.RunAsync("ip -o link show", _net.Src, ct), Does.Contain("bmtun22"));

        migrate.Signal("INT");
        var stopped = Stopwatch.StartNew();
        Assert.That(await migrate.WaitForExitAsync(TimeSpan.FromSeconds(20), ct), Is.Zero, migrate.Stderr);
        TestContext.Out.WriteLine($"exited {stopped.ElapsedMilliseconds} ms after SIGINT");
        var net = JsonDocument.Parse(migrate.Stdout).RootElement.GetProperty("network");
        TestContext.Out.WriteLine(net.ToString());
        Assert.That(net.GetProperty("tunnelRemovedBecause").GetString(), Is.EqualTo("Aborted"));
        Assert.That(migrate.Stderr, Does.Contain("network: interrupted; removing the tunnel now"));
        var after = await SnapshotAsync(ct);
        SnapshotAssert.Same(before.Src, after.Src, "source host's network configuration");
        SnapshotAssert.Same(before.Dst, after.Dst, "destination host's network configuration");
    }
}
