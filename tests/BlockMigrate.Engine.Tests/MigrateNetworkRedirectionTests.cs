using System.Text.Json;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// <c>blockmigrate migrate --hypervisor none</c> with network redirection (DNS part), end to end: the real
/// CLI, a real source shim, a real <c>receive --once</c> on loopback, and a real BIND 9 in a network
/// namespace of the test's own (nsupdate reaches it through the [network] section's dns-command).
/// </summary>
[NonParallelizable]
[CancelAfter(120_000)]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class MigrateNetworkRedirectionTests
{
    private const string Zone = "vm.test";
    private readonly string _ns = $"bmc{Environment.ProcessId}-dns";
    private Bind9Server _bind = null!;

    [OneTimeSetUp]
    public async Task StartBind()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await Shell.TryAsync($"ip netns del {_ns} 2>/dev/null", ct: cts.Token);
        await Shell.RunAsync($"ip netns add {_ns} && ip -n {_ns} link set lo up", ct: cts.Token);
        _bind = await Bind9Server.StartAsync(_ns, Zone, "web1 300 IN A 10.77.0.1\nweb2 300 IN A 10.77.0.1", cts.Token);
    }

    [OneTimeTearDown]
    public async Task StopBind()
    {
        if (_bind is not null) await _bind.DisposeAsync();
        await Shell.TryAsync($"ip netns del {_ns}");
    }

    private string[] NetworkArgs(TempDir dir, string name, string keyFile)
    {
        // the VM file's [network] section; the common settings as flags
        File.WriteAllText(dir["vm.conf"], $"""
            # network redirection of the test VM
            [network]
            vm-name = {name}
            dns-command = ip netns exec {_ns}
            dns-ttl = 7
            """);
        return ["--config", dir["vm.conf"], "--hypervisor", "none", "--dns-name", $"{name}.{Zone}", "--dns-zone", Zone,
            "--dns-server", $"127.0.0.1:{Bind9Server.Port}", "--dns-key", keyFile, "--new-address", "10.77.0.2",
            "--dns-prepare-ttl", "3", "--tunnel", "none"];
    }

    [Test]
    public async Task Migrate_points_the_VM_name_at_its_new_address_and_reports_it()
    {
        using var dir = new TempDir("netcli");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, 16L << 20, 2 << 20);
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys);

        var run = await MigrateRun.RunAsync(source, receiver.Address, keys, NetworkArgs(dir, "web1", _bind.KeyFile));

        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.Zero, receiver.Process.Stderr);
        var net = run.Report.GetProperty("network");
        TestContext.Out.WriteLine(net.ToString());
        var dig = await _bind.DigShortAsync($"web1.{Zone}", "A", CancellationToken.None);
        var digTtl = await _bind.DigAsync($"web1.{Zone}", "A", CancellationToken.None);
        Assert.Multiple(() =>
        {
            Assert.That(net.GetProperty("redirector").GetString(), Is.EqualTo("dns"));
            Assert.That(net.GetProperty("dnsStatus").GetString(), Is.EqualTo("Updated"));
            Assert.That(net.GetProperty("dnsAddresses").EnumerateArray().Select(a => a.GetString()), Is.EqualTo(new[] { "10.77.0.2" }));
            Assert.That(net.GetProperty("dnsPreviousTtl").GetInt32(), Is.EqualTo(300), "prepare saw the old TTL");
            Assert.That(net.GetProperty("dnsPreparedTtl").GetInt32(), Is.EqualTo(3));
            Assert.That(net.GetProperty("errors").GetArrayLength(), Is.Zero);
            Assert.That(DateTimeOffset.Parse(net.GetProperty("dnsChangedAt").GetString()!).ToUnixTimeMilliseconds(),
                Is.GreaterThanOrEqualTo(run.Report.GetProperty("frozen_at_unix_ms").GetInt64()), "DNS changed after the freeze");
            Assert.That(dig, Is.EqualTo(new[] { "10.77.0.2" }));
            Assert.That(digTtl, Does.Match(@"\s7\s+IN\s+A\s+10\.77\.0\.2$"));
            Assert.That(Hash(receiver.Image("vda")), Is.EqualTo(source.Hash()), "the disk moved");
        });
    }

    [Test]
    public async Task Wrong_DNS_key_exits_3_with_the_migration_committed()
    {
        using var dir = new TempDir("netcli");
        var keys = new KeyPair(dir.Path);
        var wrongKey = dir["wrong.key"];
        await _bind.NewKeyAsync(wrongKey, CancellationToken.None); // same key name, another secret
        using var source = SourceShim.Start(dir.Path, 16L << 20, 2 << 20);
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys);

        var args = NetworkArgs(dir, "web2", wrongKey).Where(a => a != "--dns-prepare-ttl" && a != "3").ToArray();
        var run = await MigrateRun.RunAsync(source, receiver.Address, keys, args);

        Assert.That(run.ExitCode, Is.EqualTo(3), run.ToString());
        Assert.That(run.Error, Does.StartWith("blockmigrate: committed, but the DNS update failed (NotAuthorized)"), run.ToString());
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.Zero, "the receiver committed: " + receiver.Process.Stderr);
        var net = run.Report.GetProperty("network");
        TestContext.Out.WriteLine(net.ToString());
        var dig2 = await _bind.DigShortAsync($"web2.{Zone}", "A", CancellationToken.None);
        Assert.Multiple(() =>
        {
            Assert.That(run.Report.GetProperty("downtime_ms").GetDouble(), Is.GreaterThan(0), "the report of a committed migration");
            Assert.That(net.GetProperty("dnsStatus").GetString(), Is.EqualTo("NotAuthorized"));
            Assert.That(net.GetProperty("errors").GetArrayLength(), Is.GreaterThan(0));
            Assert.That(dig2, Is.EqualTo(new[] { "10.77.0.1" }), "record unchanged");
            Assert.That(Hash(receiver.Image("vda")), Is.EqualTo(source.Hash()), "the disk moved all the same");
        });
    }

    [Test]
    public async Task Bad_redirection_options_are_usage_errors_before_anything_is_touched()
    {
        using var dir = new TempDir("netcli");
        using var source = SourceShim.Start(dir.Path, 4L << 20, 1 << 20);
        File.WriteAllText(dir["world.key"], "key \"x\" { algorithm hmac-sha256; secret \"AAAA\"; };\n");
        File.SetUnixFileMode(dir["world.key"], UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);

        var run = await MigrateRun.RunArgsAsync("--disk", source.DiskArg(), "--to", "127.0.0.1:1", "--plaintext",
            "--dns-name", "web9.vm.test", "--dns-zone", "other.test", "--dns-server", "127.0.0.1", "--dns-key", dir["world.key"],
            "--new-address", "10.1", "--tunnel", "bogus", "--tunnel-timeout", "soon", "--tunnel-stale-after", "0s");

        var lines = run.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        TestContext.Out.WriteLine(run.Stderr);
        Assert.Multiple(() =>
        {
            Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
            Assert.That(lines, Has.All.StartWith("blockmigrate: "), "one line per problem");
            Assert.That(run.Stderr, Does.Contain("new-address '10.1' is not an IP address"));
            Assert.That(run.Stderr, Does.Contain("tunnel 'bogus' is not one of vxlan, gre, ipip, wireguard, none"));
            Assert.That(run.Stderr, Does.Contain("tunnel-timeout 'soon' is not a positive duration"));
            Assert.That(run.Stderr, Does.Contain("tunnel-stale-after '0s' is not a positive duration"));
            Assert.That(run.Stderr, Does.Contain("is accessible by group or others"));
            Assert.That(run.Stderr, Does.Contain("dns-name 'web9.vm.test' is not inside zone 'other.test'"));
            Assert.That(source.Map.Info().DirtyBlocks, Is.Zero, "the map was not touched");
        });
    }

    private static string Hash(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(f));
    }
}
