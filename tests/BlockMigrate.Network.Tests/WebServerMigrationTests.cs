using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using BlockMigrate.Maps;
using BlockMigrate.TestSupport;
using NUnit.Framework;

namespace BlockMigrate.Network.Tests;

/// <summary>
/// The paper's experiment end to end: a real TCG guest (tools/guest) serving HTTP with busybox httpd on a
/// virtio-net/tap interface bridged in the source host's namespace, clients in a third namespace, moved by
/// <c>blockmigrate migrate --hypervisor qemu</c> with a VXLAN tunnel and a signed DNS update, as
/// docs/network.md tells an admin. Hosts (namespaces bmw&lt;pid&gt;-*):
/// <code>
///   br0 (the LAN, src and dst eth0 shaped with tbf) ── src 10.77.0.1 ── dst 10.77.0.2 ── cli 10.77.0.3
///   src: vmbr0 10.10.1.1/24 ◄─ tap vmtap ─ QEMU (guest 10.10.1.10 old + 10.10.2.10 new, gw 10.10.1.1)
///   dst: vmbr0 10.10.2.1/24 + 10.10.1.1/32 ◄─ tap vmtap ─ QEMU -incoming
/// </code>
/// Both VM bridges have the same MAC and both answer for the gateway 10.10.1.1 (an anycast gateway), and
/// the guest has both its addresses from the start: nothing in the guest changes when it moves.
/// Clients: one streaming download (<c>/cgi-bin/stream</c>, a line every 100 ms) on one connection to the
/// old address, and a new request every 100 ms to whatever BIND answers for web.vm.test.
/// The hosts' links are shaped to 100 Mbit/s with tbf. <c>BM_WEB_LINK=wan</c> shapes them to 20 Mbit/s,
/// puts tools/wanem.py (25 ms each way) on the disk and memory streams, and delays every packet of the
/// clients' paths with tools/pktdelay.py (this kernel has no netem): the client's link to the bridge by
/// 25 ms each way, and the tunnel, which then runs over its own src–dst link (wan0, 10.78.0.0/24, tbf
/// 20 Mbit/s) by 25 ms each way; so the client is 50 ms from either host and 100 ms from the old address
/// once it goes through the tunnel (tools/bench-web.sh; the round trips are measured and printed).
/// The tunnel takes the old address at the freeze (before the hand-over: checked), so what clients send
/// while the guest is stopped waits at the destination. Timings are printed (WEB-RESULT), never asserted.
/// </summary>
[TestFixture]
[NonParallelizable]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class WebServerMigrationTests
{
    static readonly IPAddress Old = IPAddress.Parse("10.10.1.10");
    static readonly IPAddress New = IPAddress.Parse("10.10.2.10");
    const string Src = "10.77.0.1", Dst = "10.77.0.2";
    const int GuestBlocks = 2048;
    const long DiskBytes = 32L << 20;

    readonly string _prefix = $"bmw{Environment.ProcessId % 100000}";
    string Br => $"{_prefix}-br";
    string SrcNs => $"{_prefix}-src";
    string DstNs => $"{_prefix}-dst";
    string CliNs => $"{_prefix}-cli";
    IEnumerable<string> All => [Br, SrcNs, DstNs, CliNs];

    readonly List<IDisposable> _owned = [];
    readonly List<int> _pids = [];
    Bind9Server? _bind;
    TempDir _dir = null!;

    [OneTimeSetUp]
    public async Task BuildGuest() => await GuestImage.EnsureBuiltAsync();

    [TearDown]
    public async Task TearDown()
    {
        for (var i = _owned.Count - 1; i >= 0; i--)
        {
            try { _owned[i].Dispose(); } catch (Exception e) { TestContext.Out.WriteLine($"teardown: {e.Message}"); }
        }
        _owned.Clear();
        if (_bind is not null) await _bind.DisposeAsync();
        foreach (var ns in All)
            await Sh.TryAsync($"ip netns del {ns} 2>/dev/null");
        _dir?.Dispose();
        // everything removed: no namespace of ours, no process we started
        var left = await Sh.TryAsync("ip netns list");
        Assert.That(left.StandardOutput, Does.Not.Contain(_prefix), "a namespace of the test is left");
        foreach (var pid in _pids)
            Assert.That(Directory.Exists($"/proc/{pid}") && !File.ReadAllText($"/proc/{pid}/stat").Contains(") Z "), Is.False,
                $"process {pid} still runs");
    }

    T Own<T>(T d) where T : IDisposable { _owned.Add(d); return d; }

    const string WanSrc = "10.78.0.1", WanDst = "10.78.0.2";

    async Task CreateHostsAsync(string? rate, CancellationToken ct)
    {
        var wan = rate == "20mbit";
        foreach (var ns in All)
            await Sh.RunAsync($"ip netns del {ns} 2>/dev/null || true; ip netns add {ns} && ip -n {ns} link set lo up", ct: ct);
        await Sh.RunAsync($"ip -n {Br} link add br0 type bridge && ip -n {Br} link set br0 up", ct: ct);
        int i = 1;
        foreach (var (ns, tag) in new[] { (SrcNs, "src"), (DstNs, "dst"), (CliNs, "cli") })
        {
            await Sh.RunAsync($"""
                ip -n {Br} link add v-{tag} type veth peer name eth0 netns {ns}
                ip -n {Br} link set v-{tag} {(wan && ns == CliNs ? "" : "master br0")} up
                ip -n {ns} addr add 10.77.0.{i}/24 dev eth0
                ip -n {ns} link set eth0 up
                """, ct: ct);
            if (wan && ns == CliNs)
            {
                // the client's link: v-cli ⇄ pktdelay (25 ms each way) ⇄ d-cli, whose peer is on the bridge
                await Sh.RunAsync($"""
                    ip -n {Br} link add d-cli type veth peer name e-cli
                    ip -n {Br} link set e-cli master br0 up
                    ip -n {Br} link set d-cli up
                    """, ct: ct);
                await PktDelayAsync("v-cli", "d-cli", ct);
            }
            if (rate != null && ns != CliNs)
                await Sh.RunAsync($"tc -n {ns} qdisc add dev eth0 root tbf rate {rate} burst 64kb latency 50ms", ct: ct);
            i++;
        }
        foreach (var (ns, addrs) in new[] { (SrcNs, "10.10.1.1/24"), (DstNs, "10.10.2.1/24 10.10.1.1/32") })
        {
            await Sh.RunAsync($"""
                ip netns exec {ns} sysctl -qw net.ipv4.ip_forward=1
                ip -n {ns} link add vmbr0 address 02:bb:00:00:00:01 type bridge
                ip -n {ns} link add hold0 type veth peer name hold1
                ip -n {ns} link set hold0 master vmbr0 up
                ip -n {ns} link set hold1 up
                for a in {addrs}; do ip -n {ns} addr add $a dev vmbr0; done
                ip -n {ns} link set vmbr0 up
                ip -n {ns} tuntap add vmtap mode tap
                ip -n {ns} link set vmtap master vmbr0 up
                """, ct: ct);
        }
        if (wan)
        {
            await Sh.RunAsync("ip link set lo mtu 1500", SrcNs, ct); // wanem's first hop: a NIC's segments, as bench-qemu
            // the tunnel's own WAN link, src wan0 ⇄ t-src ⇄ pktdelay (25 ms each way) ⇄ t-dst ⇄ dst wan0
            foreach (var (ns, tag, addr) in new[] { (SrcNs, "src", WanSrc), (DstNs, "dst", WanDst) })
                await Sh.RunAsync($"""
                    ip -n {Br} link add t-{tag} type veth peer name wan0 netns {ns}
                    ip -n {Br} link set t-{tag} up
                    ip -n {ns} addr add {addr}/24 dev wan0
                    ip -n {ns} link set wan0 up
                    tc -n {ns} qdisc add dev wan0 root tbf rate {rate} burst 64kb latency 50ms
                    """, ct: ct);
            await PktDelayAsync("t-src", "t-dst", ct);
        }
        await Sh.RunAsync($"""
            ip -n {CliNs} route add 10.10.1.0/24 via {Src}
            ip -n {CliNs} route add 10.10.2.0/24 via {Dst}
            """, ct: ct);
    }

    QemuGuest StartGuest(string name, string ns, NbdkitServer disk, bool incoming)
    {
        var g = Own(QemuGuest.Start(_dir.Path, new QemuGuestOptions
        {
            Name = name, DiskSocket = disk.Socket, Blocks = GuestBlocks, Namespace = ns, Incoming = incoming, Paused = incoming,
            KernelArgs = $"guestip={Old}/24 guestip2={New}/24 guestgw=10.10.1.1",
            ExtraArgs = ["-netdev", "tap,id=n0,ifname=vmtap,script=no,downscript=no", "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:b1:0c:0a"],
        }));
        _pids.Add(g.Pid);
        return g;
    }

    /// <summary>tools/wanem.py in the source namespace, forwarding to the destination; returns its local port.
    /// As tools/bench-qemu's DelayedPath: tbf shapes the rate, wanem delays and keeps its queues small.</summary>
    async Task<int> WanemAsync(string to, CancellationToken ct)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "netns", "exec", SrcNs, "python3", Path.Combine(Repo.Root, "tools", "wanem.py"), "--listen", "127.0.0.1:0",
                     "--to", to, "--rate", "25M", "--delay", "25", "--buffer", "64K", "--socket-buffer", "64K" })
            psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        _pids.Add(p.Id);
        Own(new Killer(p));
        var line = await p.StandardOutput.ReadLineAsync(ct) ?? throw new IOException("wanem: " + await p.StandardError.ReadToEndAsync(ct));
        return int.Parse(Regex.Match(line, @":(\d+)$").Groups[1].Value);
    }

    /// <summary>tools/pktdelay.py in the bridge's namespace: every frame between the two links 25 ms later.</summary>
    async Task PktDelayAsync(string a, string b, CancellationToken ct)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var x in new[] { "netns", "exec", Br, "python3", Path.Combine(Repo.Root, "tools", "pktdelay.py"), a, b, "--delay", "25" })
            psi.ArgumentList.Add(x);
        var p = Process.Start(psi)!;
        _pids.Add(p.Id);
        Own(new Killer(p));
        if (await p.StandardOutput.ReadLineAsync(ct) is not { } line || !line.StartsWith("delaying", StringComparison.Ordinal))
            throw new IOException("pktdelay: " + await p.StandardError.ReadToEndAsync(ct));
    }

    /// <summary>Round trip from <paramref name="ns"/> to ip:port (no ping here): the median time of five TCP
    /// connects, answered by the kernel (a closed port's RST, or the guest's SYN-ACK).</summary>
    static async Task<string> RttAsync(string ns, string ip, int port, CancellationToken ct)
    {
        var times = new List<double>();
        for (var i = 0; i < 5; i++)
        {
            using var s = NetnsSocket.Tcp(ns);
            var t = Stopwatch.StartNew();
            try { await s.ConnectAsync(new IPEndPoint(IPAddress.Parse(ip), port), ct).AsTask().WaitAsync(TimeSpan.FromSeconds(3), ct); }
            catch (SocketException) { }
            catch (TimeoutException) { continue; }
            times.Add(t.Elapsed.TotalMilliseconds);
        }
        times.Sort();
        return times.Count == 0 ? "none" : $"{times[times.Count / 2]:0.0}";
    }

    // Every probe goes to a closed port: SYN out, RST back is one round trip, and the entry it leaves is
    // CLOSE. A probe of the guest's port 80 left a half-closed connection to the old address that busybox
    // httpd keeps until its header timeout, and migrate rightly waited for it before removing the tunnel.
    async Task PrintRttsAsync(string when, bool wan, CancellationToken ct)
    {
        var line = $"RTT {when} (ms, median of 5 TCP handshakes): cli->src {await RttAsync(CliNs, Src, 1, ct)} cli->dst {await RttAsync(CliNs, Dst, 1, ct)} " +
                   $"cli->old {await RttAsync(CliNs, Old.ToString(), 1, ct)} cli->new {await RttAsync(CliNs, New.ToString(), 1, ct)}";
        if (wan) line += $" src->dst(tunnel link) {await RttAsync(SrcNs, WanDst, 1, ct)}";
        TestContext.Out.WriteLine(line);
    }

    /// <summary><c>conntrack -E -o timestamp</c> in a namespace, its lines kept; killed by PID on Dispose.</summary>
    sealed class ConntrackEvents : IDisposable
    {
        readonly Process _p;
        readonly List<string> _lines = [];
        ConntrackEvents(Process p)
        {
            _p = p;
            p.OutputDataReceived += (_, e) => { if (e.Data != null) lock (_lines) _lines.Add(e.Data); };
            p.BeginOutputReadLine();
        }
        public static ConntrackEvents Start(string ns)
        {
            var psi = new ProcessStartInfo("ip") { RedirectStandardOutput = true, UseShellExecute = false };
            foreach (var a in new[] { "netns", "exec", ns, "conntrack", "-E", "-f", "ipv4", "-o", "timestamp" }) psi.ArgumentList.Add(a);
            return new ConntrackEvents(Process.Start(psi)!);
        }
        public int Pid => _p.Id;
        public IReadOnlyList<string> Lines { get { lock (_lines) return [.. _lines]; } }
        public void Dispose() { try { if (!_p.HasExited) { _p.Kill(); _p.WaitForExit(5000); } } catch (InvalidOperationException) { } _p.Dispose(); }
    }

    sealed class Killer(Process p) : IDisposable
    {
        public void Dispose() { try { if (!p.HasExited) { p.Kill(); p.WaitForExit(5000); } } catch (InvalidOperationException) { } p.Dispose(); }
    }

    [Test, CancelAfter(420_000)]
    public async Task Web_server_guest_moves_with_its_clients_attached(CancellationToken ct)
    {
        var wan = Environment.GetEnvironmentVariable("BM_WEB_LINK") == "wan";
        _dir = new TempDir("web");
        await CreateHostsAsync(wan ? "20mbit" : "100mbit", ct);
        _bind = await Bind9Server.StartAsync(CliNs, "vm.test", $"web 1 IN A {Old}", ct);
        var keys = new KeyPair(_dir.Path);

        // disks as WholeVmTestbed: source shim on the image; receive --once writes dst/vda.img, gated
        var srcImage = _dir["src.img"];
        var srcMap = _dir["src.map"];
        await Tool.CheckAsync("truncate", ["-s", $"{DiskBytes}", srcImage]);
        Directory.CreateDirectory(_dir["dst"]);
        Directory.CreateDirectory(_dir["gates"]);
        var dstImage = Path.Combine(_dir["dst"], "vda.img");
        await Tool.CheckAsync("truncate", ["-s", $"{DiskBytes}", dstImage]);
        using (var gate = DirtyMap.Create(Path.Combine(_dir["gates"], "vda.map"), (ulong)DiskBytes, 4096))
            gate.SetState(MapState.Gate);
        var srcShim = Own(NbdkitServer.Start(_dir.Path, NbdkitServer.FilterArgs(srcImage, srcMap)));
        var dstShim = Own(NbdkitServer.Start(_dir.Path, NbdkitServer.FilterArgs(dstImage, Path.Combine(_dir["gates"], "vda.map"), gate: true)));
        _pids.AddRange([srcShim.Pid, dstShim.Pid]);

        var source = StartGuest("src", SrcNs, srcShim, incoming: false);
        await source.Serial.WaitForAsync(@"GUEST-NET ", TimeSpan.FromSeconds(120));
        await source.Serial.WaitForAsync(@"PROGRESS seq=50\b", TimeSpan.FromSeconds(120));
        for (var i = 0; ; i++)
        {
            try { Assert.That(await HttpGetAsync(CliNs, Old, "/", TimeSpan.FromSeconds(3), ct), Does.Contain("hello-from-guest")); break; }
            catch (Exception) when (i < 60) { await Task.Delay(500, ct); }
        }

        await PrintRttsAsync("before the migration", wan, ct);
        var clock = Stopwatch.StartNew();
        var wall0 = DateTimeOffset.UtcNow;
        await using var stream = await StreamClient.ConnectAsync(CliNs, Old, clock, ct);
        await using var shorts = HttpRequestClient.Start(CliNs, "web.vm.test", clock);
        await Task.Delay(3000, ct);
        var before = (Src: await HostSnapshot.TakeAsync(SrcNs, ct), Dst: await HostSnapshot.TakeAsync(DstNs, ct));

        var destination = StartGuest("dst", DstNs, dstShim, incoming: true);
        var receiver = Own(CliProcess.Start(DstNs, "receive", "--listen", $"{Dst}:0", "--image-dir", _dir["dst"], "--once",
            "--gate-map-dir", _dir["gates"], "--key", keys.ReceiverKey, "--trusted", keys.Trusted));
        var port = Regex.Match(await receiver.WaitForStdoutAsync(@"listening on \S+:(\d+)", ct), @":(\d+)$").Groups[1].Value;
        var to = $"{Dst}:{port}";
        var migrationUri = $"tcp:{Dst}:4444";
        if (wan)
        {
            to = $"127.0.0.1:{await WanemAsync(to, ct)}";
            migrationUri = $"tcp:127.0.0.1:{await WanemAsync($"{Dst}:4444", ct)}";
        }
        File.WriteAllText(_dir["web.vm"], $"""
            [network]
            vm-name = web
            tunnel-id = 31
            dns-command = ip netns exec {CliNs}
            dns-ttl = 1
            """);
        var started = clock.Elapsed;
        var postcopy = Environment.GetEnvironmentVariable("BM_WEB_MEMORY") == "postcopy";
        string[] migrateArgs = ["migrate", "--config", _dir["web.vm"], "--disk", $"vda={srcImage}:{srcMap}",
            "--to", to, "--key", keys.SourceKey, "--peer-fingerprint", keys.ReceiverFingerprint, "--json", "--timeout", "300",
            "--hypervisor", "qemu", "--qmp-source", source.QmpSocket, "--qmp-destination", destination.QmpSocket,
            "--migration-uri", migrationUri, "--incoming-uri", "tcp:0.0.0.0:4444",
            // BM_WEB_MEMORY=postcopy (tools/bench-web.sh's BENCH_WEB_MEMORY): post-copy after the first pass instead of
            // multifd + zstd (QEMU 7.2's destination aborts when post-copy starts with multifd on: docs/hypervisors.md)
            .. (postcopy ? (string[])["--postcopy"] : ["--multifd", "--memory-compression", "zstd"]),
            // on the slow link as tools/bench-vm.sh: one channel, and auto-converge (without it the memory copy
            // did not converge and QEMU stopped the guest for 4.4 s); at 100 Mbit/s it only slowed the server
            .. (wan ? (postcopy ? (string[])["--auto-converge"] : ["--multifd-channels", "1", "--auto-converge"]) : []),
            "--dns-name", "web.vm.test", "--dns-zone", "vm.test", "--dns-server", $"127.0.0.1:{Bind9Server.Port}", "--dns-key", _bind.KeyFile,
            "--old-address", Old.ToString(), "--new-address", New.ToString(), "--tunnel", "vxlan",
            "--tunnel-remote", wan ? WanDst : Dst, "--destination-command", $"ip netns exec {DstNs}", "--tunnel-timeout", "120"];
        // the source host's conntrack events, printed when the tunnel is slow to drain (or BM_WEB_VERBOSE=1)
        var ctEvents = ConntrackEvents.Start(SrcNs);
        _pids.Add(ctEvents.Pid);
        Own(ctEvents);
        var migrate = Own(CliProcess.Start(SrcNs, migrateArgs));
        await migrate.WaitForStderrAsync("committed: ", ct);
        var committed = clock.Elapsed;
        // let the clients run on: the stream through the tunnel, new requests at the new address
        await Task.Delay(4000, ct);
        await AssertNothingInTheHostNamespaceAsync(ct);
        await PrintRttsAsync("with the tunnel up", wan, ct);
        await Task.Delay(4000, ct);
        // what a hung or unreachable guest leaves to look at (its console, the gate, both sides' logs)
        string Diagnose()
        {
            string gateState;
            try
            {
                using var g = DirtyMap.Open(Path.Combine(_dir["gates"], "vda.map"));
                var info = g.Info();
                gateState = $"state {info.State}, {info.GatedBlocks} blocks gated";
            }
            catch (Exception e) { gateState = e.Message; }
            var console = destination.Serial.Text();
            return $"\ndestination gate: {gateState}\ndestination console (last 3000 chars):\n{console[Math.Max(0, console.Length - 3000)..]}" +
                   $"\nmigrate:\n{migrate.Stderr}\nreceiver:\n{receiver.Stderr}";
        }
        Assert.That(stream.Error, Is.Null, () => $"the long-lived connection broke: {stream.Error}{Diagnose()}");
        Assert.That(stream.LastTick, Is.GreaterThan(clock.Elapsed - TimeSpan.FromSeconds(2)), () => "the stream goes on" + Diagnose());
        Assert.That(migrate.Stderr, Does.Contain("waiting until no connection to"));
        Assert.That(migrate.HasExited, Is.False, $"migrate waits while the stream is open:\n{migrate.Stderr}");
        await shorts.DisposeAsync();
        var streamLines = stream.Lines;
        var streamStall = stream.LongestGap;
        await stream.CloseAsync(ct);
        var tunnelClosing = clock.Elapsed;
        var closedAt = DateTimeOffset.UtcNow;

        int exit;
        try { exit = await migrate.WaitForExitAsync(TimeSpan.FromSeconds(90), ct); }
        finally
        {
            var drainS = (DateTimeOffset.UtcNow - closedAt).TotalSeconds;
            if (drainS > 5 || Environment.GetEnvironmentVariable("BM_WEB_VERBOSE") == "1")
            {
                TestContext.Out.WriteLine($"DRAIN {drainS:0.0} s after the stream closed at {closedAt.ToUnixTimeMilliseconds() / 1000.0:0.000}; source conntrack now:\n" +
                    (await Sh.TryAsync($"conntrack -L -f ipv4 -d {Old}; conntrack -L -f ipv4 -s {Old}", SrcNs, ct)).StandardOutput);
                foreach (var l in ctEvents.Lines.Where(l => l.Contains(Old.ToString(), StringComparison.Ordinal)))
                    TestContext.Out.WriteLine("ct: " + l);
            }
        }
        Assert.That(exit, Is.Zero, $"migrate: {migrate.Stderr}\nreceiver: {receiver.Stderr}");
        Assert.That(await receiver.WaitForExitAsync(TimeSpan.FromSeconds(30), ct), Is.Zero, receiver.Stderr);
        var report = JsonDocument.Parse(migrate.Stdout).RootElement;
        var net = report.GetProperty("network");
        TestContext.Out.WriteLine(report.ToString());

        var requests = shorts.Requests;
        var failed = requests.Where(r => r.Error != null).ToList();
        var ok = requests.Where(r => r.Error == null).Select(r => r.Done).ToList();
        var gap = ok.Zip(ok.Skip(1), (a, b) => b - a).DefaultIfEmpty().Max();
        var before0 = ok.Where(t => t < started).ToList();
        var baselineGap = before0.Zip(before0.Skip(1), (a, b) => b - a).DefaultIfEmpty().Max();
        var gapEnd = ok.Zip(ok.Skip(1), (a, b) => (Gap: b - a, End: b)).DefaultIfEmpty().MaxBy(x => x.Gap).End;
        var firstNew = requests.FirstOrDefault(r => r.Error == null && r.Resolved == New.ToString() && r.At > started);
        var lastOldAfter = requests.LastOrDefault(r => r.Resolved == Old.ToString());
        var dnsChanged = DateTimeOffset.Parse(net.GetProperty("dnsChangedAt").GetString()!);
        var tunnelUp = DateTimeOffset.Parse(net.GetProperty("tunnelUpAt").GetString()!);
        var tunnelRemoved = DateTimeOffset.Parse(net.GetProperty("tunnelRemovedAt").GetString()!);
        var ms = (TimeSpan t) => $"{t.TotalMilliseconds:0}";
        TestContext.Out.WriteLine(
            $"WEB-RESULT link={(wan ? "20mbit+50ms" : "100mbit")} requests={requests.Count} failed={failed.Count} " +
            $"longest_gap_ms={ms(gap)} (ends {ms(gapEnd - committed)} ms after the commit) longest_gap_before_migrate_ms={ms(baselineGap)} stream_lines={streamLines} stream_survived={stream.Error is null} stream_longest_stall_ms={ms(streamStall)} (ends {ms(stream.LongestGapEnd - committed)} ms after the commit) stream_longest_stall_before_migrate_ms={ms(stream.LongestGapBefore(started))} " +
            $"migrate_to_commit_ms={ms(committed - started)} " +
            $"commit_to_first_request_at_new_ms={(firstNew is null ? "never" : ms(firstNew.Done - committed))} " +
            $"dns_after_tunnel_ms={ms(dnsChanged - tunnelUp)} tunnel_removed_after_stream_closed_ms~={ms(tunnelRemoved - tunnelUp - (tunnelClosing - committed))} " +
            $"tunnel_removed_because={net.GetProperty("tunnelRemovedBecause").GetString()} " +
            $"guest_downtime_ms={report.GetProperty("guest_downtime_ms").GetDouble():0} total_s={report.GetProperty("total_seconds").GetDouble():0.0}");
        var frozen = DateTimeOffset.FromUnixTimeMilliseconds(report.GetProperty("frozen_at_unix_ms").GetInt64());
        TestContext.Out.WriteLine($"tunnel up {ms(tunnelUp - frozen)} ms and DNS changed {ms(dnsChanged - frozen)} ms after the source froze");
        // the timeline against QEMU's STOP (source) and RESUME (destination) events, and the client's gaps
        var stopMatch = Regex.Match(migrate.Stderr, @"source stopped at (\d\d:\d\d:\d\d\.\d{3}) \(STOP\)");
        var resumedMatch = Regex.Match(migrate.Stderr, @"destination resumed at \S+ \(RESUME\), (\d+) ms after STOP");
        Assert.That(stopMatch.Success && resumedMatch.Success, Is.True, migrate.Stderr);
        var stop = new DateTimeOffset(frozen.UtcDateTime.Date + TimeSpan.Parse(stopMatch.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), TimeSpan.Zero);
        if (stop > frozen + TimeSpan.FromHours(1)) stop -= TimeSpan.FromDays(1);   // across midnight
        var resumed = stop + TimeSpan.FromMilliseconds(int.Parse(resumedMatch.Groups[1].Value));
        var rel = (TimeSpan clockTime) => ms(wall0 + clockTime - stop);
        TestContext.Out.WriteLine(
            $"TIMELINE ms after STOP: frozen {ms(frozen - stop)} tunnel_up {ms(tunnelUp - stop)} dns_changed {ms(dnsChanged - stop)} resumed {ms(resumed - stop)} " +
            $"commit_seen {rel(committed)} longest_gap {rel(gapEnd - gap)}..{rel(gapEnd)} stream_stall {rel(stream.LongestGapEnd - streamStall)}..{rel(stream.LongestGapEnd)} " +
            $"first_ok_at_new {(firstNew is null ? "never" : rel(firstNew.Done))}");
        var verbose = Environment.GetEnvironmentVariable("BM_WEB_VERBOSE") == "1";
        foreach (var l in migrate.Stderr.Split('\n').Where(l => verbose || l.Contains("after STOP", StringComparison.Ordinal) || l.Contains("network: tunnel", StringComparison.Ordinal) || l.Contains("handed over", StringComparison.Ordinal) || l.Contains("downtime-limit", StringComparison.Ordinal) || l.Contains("switchover steps", StringComparison.Ordinal)))
            TestContext.Out.WriteLine("migrate: " + l.Trim());
        foreach (var r in requests.Where(r => r.Done - r.At > TimeSpan.FromMilliseconds(700)))
            TestContext.Out.WriteLine($"slow request: {ms(r.At - committed)}..{ms(r.Done - committed)} ms after the commit, {rel(r.At)}..{rel(r.Done)} after STOP ({r.Resolved}) {r.Error}");
        foreach (var f in failed.Take(5))
            TestContext.Out.WriteLine($"failed at {ms(f.At)} ms ({f.Resolved}): {f.Error}");

        Assert.Multiple(() =>
        {
            Assert.That(failed, Is.Empty, "failed requests");
            Assert.That(streamLines, Is.GreaterThan(50), "the stream ran");
            Assert.That(firstNew, Is.Not.Null, "new requests reach the guest at its new address (the destination)");
            Assert.That(requests.Count(r => r.Error == null && r.Resolved == New.ToString()), Is.GreaterThan(5));
            Assert.That(lastOldAfter, Is.Not.Null, "requests to the old address before the move");
            Assert.That(net.GetProperty("tunnelRemovedBecause").GetString(), Is.EqualTo("Drained"));
            Assert.That(net.GetProperty("dnsStatus").GetString(), Is.EqualTo("Updated"));
            Assert.That(net.GetProperty("errors").GetArrayLength(), Is.Zero);
            // the tunnel took the old address at the freeze, before the hand-over, so before the guest resumed
            Assert.That(migrate.Stderr, Does.Contain($"network: tunnel bmtun31 up at the freeze"));
            Assert.That(tunnelUp, Is.LessThan(resumed), "the tunnel carries the old address before the destination VM resumes");
            Assert.That(WholeStatus(destination), Is.EqualTo("running"));
        });
        // the stream was served by the guest at the destination: it is the source QEMU that must not run
        Assert.That(WholeStatus(source), Is.Not.EqualTo("running"));
        // both hosts' network as before the migration: the tunnel, its routes, rules and nft chain gone
        // (the VM's tap is left out: it loses or gains its carrier as the VM moves)
        var after = (Src: await HostSnapshot.TakeAsync(SrcNs, ct), Dst: await HostSnapshot.TakeAsync(DstNs, ct));
        SnapshotAssert.Same(NoTap(before.Src), NoTap(after.Src), "source host's network configuration");
        SnapshotAssert.Same(NoTap(before.Dst), NoTap(after.Dst), "destination host's network configuration");
    }

    /// <summary>The VM's traffic stays in the test's namespaces: this (the host's) namespace has no link, route,
    /// rule or nft chain of the VM or its tunnel while the tunnel is up (checked with the tunnel in place).</summary>
    async Task AssertNothingInTheHostNamespaceAsync(CancellationToken ct)
    {
        var host = await Sh.RunAsync("ip -o link show; ip -o addr show; ip route show table all; ip rule show; nft list ruleset 2>/dev/null || true", ct: ct);
        Assert.That(await Sh.RunAsync("ip -o link show bmtun31", SrcNs, ct), Does.Contain("bmtun31"), "the tunnel is up in the source namespace");
        foreach (var needle in new[] { "vmtap", "bmtun31", Old.ToString(), New.ToString(), "10.10.1.", "10.10.2.", "52:54:00:b1:0c:0a" })
            Assert.That(host, Does.Not.Contain(needle), $"the host namespace shows {needle}");
    }

    static string NoTap(string snapshot) => string.Join('\n', snapshot.Split('\n').Where(l => !l.Contains("vmtap", StringComparison.Ordinal)));

    static string WholeStatus(QemuGuest g)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        var qmp = Hypervisors.Qemu.QmpClient.ConnectAsync(g.ObserverQmpSocket, TimeSpan.FromSeconds(10), cts.Token).GetAwaiter().GetResult();
        try { return (string?)qmp.ExecuteObjectAsync("query-status", null, cts.Token).GetAwaiter().GetResult()["status"] ?? "?"; }
        finally { qmp.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
    }

    /// <summary>One HTTP/1.0 GET on a new connection from the namespace; returns the whole response.</summary>
    static async Task<string> HttpGetAsync(string ns, IPAddress ip, string path, TimeSpan timeout, CancellationToken ct)
    {
        using var s = NetnsSocket.Tcp(ns);
        using var t = CancellationTokenSource.CreateLinkedTokenSource(ct);
        t.CancelAfter(timeout);
        await s.ConnectAsync(new IPEndPoint(ip, 80), t.Token);
        await s.SendAsync(Encoding.ASCII.GetBytes($"GET {path} HTTP/1.0\r\nHost: web.vm.test\r\n\r\n"), SocketFlags.None, t.Token);
        var buf = new byte[4096];
        int got = 0, n;
        while ((n = await s.ReceiveAsync(buf.AsMemory(got), SocketFlags.None, t.Token)) > 0) got += n;
        var text = Encoding.ASCII.GetString(buf, 0, got);
        if (!text.StartsWith("HTTP/1.", StringComparison.Ordinal) || !text.Contains(" 200 ")) throw new IOException($"got '{text.Split('\n')[0]}'");
        return text;
    }

    /// <summary>A new request every 100 ms: dig the name at BIND, GET / from the answer (timeout 10 s).</summary>
    sealed class HttpRequestClient : IAsyncDisposable
    {
        public sealed record Request(TimeSpan At, TimeSpan Done, string Resolved, string? Error);
        readonly CancellationTokenSource _stop = new();
        readonly List<Request> _requests = [];
        Task? _loop;

        public static HttpRequestClient Start(string ns, string name, Stopwatch clock)
        {
            var c = new HttpRequestClient();
            c._loop = Task.Run(() => c.RunAsync(ns, name, clock));
            return c;
        }

        public IReadOnlyList<Request> Requests { get { lock (_requests) return [.. _requests]; } }

        async Task RunAsync(string ns, string name, Stopwatch clock)
        {
            var dig = CommandPrefixRunner.InNamespace(ns);
            while (!_stop.IsCancellationRequested)
            {
                var at = clock.Elapsed;
                string resolved = "";
                string? error = null;
                try
                {
                    var r = await dig.RunAsync("dig", ["+short", "+norecurse", "+time=1", "+tries=2", "-p", Bind9Server.Port.ToString(),
                        "@127.0.0.1", name, "A"], null, _stop.Token);
                    resolved = r.StandardOutput.Trim();
                    if (!IPAddress.TryParse(resolved, out var ip)) throw new IOException($"dig gave '{resolved}' ({r.FirstErrorLine})");
                    var text = await HttpGetAsync(ns, ip, "/", TimeSpan.FromSeconds(10), _stop.Token);
                    if (!text.Contains("hello-from-guest")) throw new IOException("not the guest's page");
                }
                catch (OperationCanceledException) when (_stop.IsCancellationRequested) { return; }
                catch (Exception ex) { error = ex.Message; }
                lock (_requests) _requests.Add(new Request(at, clock.Elapsed, resolved, error));
                try { await Task.Delay(100, _stop.Token); } catch (OperationCanceledException) { return; }
            }
        }

        public async ValueTask DisposeAsync()
        {
            if (_loop is null) return;
            await _stop.CancelAsync();
            await _loop;
            _loop = null;
        }
    }

    /// <summary>GET /cgi-bin/stream on one connection: the guest writes "tick N" every 100 ms; records each line's arrival.</summary>
    sealed class StreamClient : IAsyncDisposable
    {
        readonly Socket _socket;
        readonly Stopwatch _clock;
        readonly CancellationTokenSource _stop = new();
        readonly List<TimeSpan> _ticks = [];
        Task? _loop;

        StreamClient(Socket s, Stopwatch clock) { _socket = s; _clock = clock; }
        public Exception? Error { get; private set; }
        public int Lines { get { lock (_ticks) return _ticks.Count; } }
        public TimeSpan LongestGapBefore(TimeSpan t) { lock (_ticks) { var b = _ticks.Where(x => x < t).ToList(); return b.Zip(b.Skip(1), (x, y) => y - x).DefaultIfEmpty().Max(); } }
        public TimeSpan LastTick { get { lock (_ticks) return _ticks.LastOrDefault(); } }
        public TimeSpan LongestGap { get { lock (_ticks) return _ticks.Zip(_ticks.Skip(1), (a, b) => b - a).DefaultIfEmpty().Max(); } }
        public TimeSpan LongestGapEnd { get { lock (_ticks) return _ticks.Zip(_ticks.Skip(1), (a, b) => (Gap: b - a, End: b)).DefaultIfEmpty().MaxBy(x => x.Gap).End; } }

        public static async Task<StreamClient> ConnectAsync(string ns, IPAddress ip, Stopwatch clock, CancellationToken ct)
        {
            var s = NetnsSocket.Tcp(ns);
            await s.ConnectAsync(new IPEndPoint(ip, 80), ct);
            await s.SendAsync(Encoding.ASCII.GetBytes("GET /cgi-bin/stream HTTP/1.0\r\nHost: web.vm.test\r\n\r\n"), SocketFlags.None, ct);
            var c = new StreamClient(s, clock);
            c._loop = Task.Run(c.RunAsync);
            return c;
        }

        async Task RunAsync()
        {
            var buf = new byte[4096];
            var pending = new StringBuilder();
            long expect = -1;
            try
            {
                while (!_stop.IsCancellationRequested)
                {
                    var n = await _socket.ReceiveAsync(buf, SocketFlags.None, _stop.Token);
                    if (n == 0) throw new IOException("the server closed the stream");
                    pending.Append(Encoding.ASCII.GetString(buf, 0, n));
                    var text = pending.ToString();
                    var end = text.LastIndexOf('\n');
                    if (end < 0) continue;
                    pending.Clear().Append(text[(end + 1)..]);
                    foreach (Match m in Regex.Matches(text[..end], @"^tick (\d+)\r?$", RegexOptions.Multiline))
                    {
                        var seq = long.Parse(m.Groups[1].Value);
                        if (expect >= 0 && seq != expect) throw new IOException($"tick {seq} after {expect - 1}: lost data");
                        expect = seq + 1;
                        lock (_ticks) _ticks.Add(_clock.Elapsed);
                    }
                }
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested) { }
            catch (Exception ex) { Error = ex; }
        }

        /// <summary>Stops reading and closes the connection (the server's CGI then ends on a write error).</summary>
        public async Task CloseAsync(CancellationToken ct)
        {
            await _stop.CancelAsync();
            if (_loop is not null) await _loop;
            _loop = null;
            _socket.Close();
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            if (_loop is not null) await _loop;
            _socket.Dispose();
            _stop.Dispose();
        }
    }
}
