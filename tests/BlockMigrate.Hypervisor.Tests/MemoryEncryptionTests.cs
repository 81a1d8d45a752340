using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using BlockMigrate.Hypervisors.Qemu;
using BlockMigrate.Transport;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// The memory stream is encrypted and authenticated by default (issue 10, item 11). The guest holds a
/// random marker in its RAM (its kernel command line, which the kernel keeps and hands to init); the
/// memory stream runs over TCP through a recording proxy, as an eavesdropper on the path would see it.
/// By default the marker must not appear on the wire and the guest moves with every write; with
/// <c>--memory-plaintext</c> it appears (so the check can fail); a destination QEMU without this
/// migration's key receives nothing it could read and the source VM runs on.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class MemoryEncryptionTests
{
    private WholeVmTestbed? _bed;
    private readonly List<IDisposable> _owned = [];
    private readonly string _marker = "BMSECRET" + Convert.ToHexString(RandomNumberGenerator.GetBytes(12));

    [TearDown]
    public void StopEverything()
    {
        foreach (var d in _owned) d.Dispose();
        _owned.Clear();
        _bed?.Dispose();
        _bed = null;
    }

    private async Task<WholeVmTestbed> StartAsync(string tag)
    {
        _bed = await WholeVmTestbed.StartAsync(tag, kernelArgs: "bmmarker=" + _marker);
        return _bed;
    }

    private static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        var port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    [Test, CancelAfter(300_000)]
    public async Task By_default_the_memory_stream_is_encrypted_and_the_guest_moves_with_every_write(CancellationToken ct)
    {
        var bed = await StartAsync("enc");
        var capture = await MigrateThroughProxyAsync(bed, ct);
        TestContext.Out.WriteLine($"captured {capture.Length} bytes of memory stream");
        Assert.That(capture.Length, Is.GreaterThan(1 << 20), "the memory stream went through the proxy");
        Assert.That(capture[0], Is.EqualTo(0x16), "a TLS handshake record opens the stream");
        Assert.That(Contains(capture, _marker), Is.False, "the guest's secret crossed the wire in the clear");
    }

    [Test, CancelAfter(300_000)]
    public async Task With_memory_plaintext_the_marker_is_on_the_wire(CancellationToken ct)
    {
        var bed = await StartAsync("plain");
        var capture = await MigrateThroughProxyAsync(bed, ct, "--memory-plaintext");
        TestContext.Out.WriteLine($"captured {capture.Length} bytes of memory stream");
        Assert.That(Contains(capture, _marker), Is.True, "the marker is in the guest's RAM, so a plaintext stream shows it");
    }

    /// <summary>
    /// Memory through a recording proxy to the destination QEMU; the whole migration checked as in
    /// <see cref="WholeVmMigrationTests"/> (exit 0, the guest writes on at the destination, every block
    /// newest, the rest of the disk equal), and the receiver's key directory removed at the end.
    /// </summary>
    private async Task<byte[]> MigrateThroughProxyAsync(WholeVmTestbed bed, CancellationToken ct, params string[] extra)
    {
        var destination = bed.StartDestination();
        var (receiver, address) = await bed.StartReceiverAsync();
        var incomingPort = FreePort();
        var proxy = Own(new RecordingProxy(new IPEndPoint(IPAddress.Loopback, incomingPort)));
        var migrate = bed.StartMigrate(address, destination, $"tcp:127.0.0.1:{proxy.Port}", $"tcp:127.0.0.1:{incomingPort}", extra);
        var exit = await WholeVmTestbed.ExitOfAsync(migrate, TimeSpan.FromSeconds(220));
        Assert.That(exit, Is.Zero, $"migrate: {migrate.Stderr}\nreceiver: {receiver.Stderr}");
        Assert.That(await WholeVmTestbed.ExitOfAsync(receiver, TimeSpan.FromSeconds(30)), Is.Zero, receiver.Stderr);
        var encrypted = extra.Length == 0;
        Assert.That(migrate.Stderr, encrypted ? Does.Contain("memory stream: TLS") : Does.Contain("memory stream in PLAINTEXT"));
        var keyDir = Regex.Match(receiver.Stderr, @"memory stream key for the destination QEMU in (\S+)");
        Assert.That(keyDir.Success, Is.EqualTo(encrypted), receiver.Stderr);
        if (keyDir.Success)
            Assert.That(Directory.Exists(keyDir.Groups[1].Value), Is.False, "the receiver removes the key when its session ends");

        var stoppedAt = bed.Source.Serial.LastProgress();
        var first = await destination.Serial.WaitForProgressBeyondAsync(stoppedAt, TimeSpan.FromSeconds(60));
        await destination.Serial.WaitForProgressBeyondAsync(first + 100, TimeSpan.FromSeconds(60));
        Assert.That(destination.Serial.Text(), Does.Not.Contain("WRITE-ERR"));
        await WholeVmTestbed.StopAsync(destination, ct);
        var verdict = GuestDisk.Verify(bed.DestinationImage, WholeVmTestbed.GuestBlocks);
        Assert.That(verdict.Ok, verdict.ToString());
        Assert.That(bed.FillMatches(), "the rest of the disk differs between source and destination");
        return proxy.Captured();
    }

    [Test, CancelAfter(300_000)]
    public async Task A_destination_without_the_migrations_key_gets_nothing_readable_and_the_source_runs_on(CancellationToken ct)
    {
        var bed = await StartAsync("wrongkey");
        var destination = bed.StartDestination();
        // the memory stream diverted to another QEMU waiting for a migration under a key of its own (an
        // impostor on the path, or a stale destination): it must neither get the memory nor run the VM
        var impostor = bed.StartDestination();
        var impostorPort = FreePort();
        var wrongKey = MemoryKey.WriteDirectory(MemoryKey.New());
        try
        {
            await using (var qmp = await QmpClient.ConnectAsync(impostor.ObserverQmpSocket, TimeSpan.FromSeconds(10), ct))
            {
                await qmp.ExecuteAsync("object-add", new JsonObject { ["qom-type"] = "tls-creds-psk", ["id"] = "impostor", ["endpoint"] = "server", ["dir"] = wrongKey }, ct);
                await qmp.ExecuteAsync("migrate-set-parameters", new JsonObject { ["tls-creds"] = "impostor" }, ct);
                await qmp.ExecuteAsync("migrate-incoming", new JsonObject { ["uri"] = $"tcp:127.0.0.1:{impostorPort}" }, ct);
            }
            var proxy = Own(new RecordingProxy(new IPEndPoint(IPAddress.Loopback, impostorPort)));
            var (receiver, address) = await bed.StartReceiverAsync();
            var migrate = bed.StartMigrate(address, destination, $"tcp:127.0.0.1:{proxy.Port}", $"tcp:127.0.0.1:{FreePort()}");
            var exit = await WholeVmTestbed.ExitOfAsync(migrate, TimeSpan.FromSeconds(220));
            TestContext.Out.WriteLine(migrate.Stderr);
            Assert.That(exit, Is.EqualTo(1), "the memory migration must fail");
            Assert.That(migrate.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries)[^1], Does.Contain("memory migration failed").Or.Contain("TLS"));
            Assert.That(await WholeVmTestbed.ExitOfAsync(receiver, TimeSpan.FromSeconds(30)), Is.EqualTo(1), "the receiver did not commit");
            var capture = proxy.Captured();
            TestContext.Out.WriteLine($"the impostor was sent {capture.Length} bytes");
            Assert.That(capture.Length, Is.LessThan(64 << 10), "no more than a TLS handshake reached it");
            Assert.That(Contains(capture, _marker), Is.False);
            if (!impostor.HasExited)
                Assert.That(await WholeVmTestbed.StatusAsync(impostor, ct), Is.Not.EqualTo("running"));

            Assert.That(await WholeVmTestbed.StatusAsync(bed.Source, ct), Is.EqualTo("running"));
            var now = bed.Source.Serial.LastProgress();
            await bed.Source.Serial.WaitForProgressBeyondAsync(now + 100, TimeSpan.FromSeconds(60));
            await WholeVmTestbed.StopAsync(bed.Source, ct);
            var verdict = GuestDisk.Verify(bed.SourceImage, WholeVmTestbed.GuestBlocks);
            Assert.That(verdict.Ok, verdict.ToString());
        }
        finally
        {
            MemoryKey.Remove(wrongKey);
        }
    }

    [Test, System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public void A_receiver_refuses_a_memory_key_that_is_not_64_hex_digits()
    {
        Assert.That(MemoryKey.IsValid(MemoryKey.New()), Is.True);
        Assert.That(MemoryKey.IsValid(new string('a', 63)), Is.False);
        Assert.That(MemoryKey.IsValid(new string('a', 63) + "\n"), Is.False);
        Assert.That(MemoryKey.IsValid("../../../../etc/passwd" + new string('a', 42)), Is.False);
        var dir = MemoryKey.WriteDirectory(MemoryKey.New());
        try
        {
            Assert.That(File.GetUnixFileMode(dir), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute));
            Assert.That(File.GetUnixFileMode(Path.Combine(dir, "keys.psk")), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite));
            Assert.That(File.ReadAllText(Path.Combine(dir, "keys.psk")), Does.Match("^blockmigrate:[0-9a-f]{64}\n$"));
        }
        finally
        {
            MemoryKey.Remove(dir);
        }
        Assert.That(Directory.Exists(dir), Is.False);
    }

    private T Own<T>(T d) where T : IDisposable
    {
        _owned.Add(d);
        return d;
    }

    private static bool Contains(byte[] haystack, string needle) =>
        haystack.AsSpan().IndexOf(Encoding.ASCII.GetBytes(needle)) >= 0;

    /// <summary>
    /// A TCP proxy on loopback that forwards every connection (multifd opens several) to one target and
    /// records what the client sent, as a wiretap on the migration path would.
    /// </summary>
    private sealed class RecordingProxy : IDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly IPEndPoint _target;
        private readonly List<MemoryStream> _records = []; // one per connection, in order
        private readonly CancellationTokenSource _stop = new();
        private readonly List<Socket> _sockets = [];

        public RecordingProxy(IPEndPoint target)
        {
            _target = target;
            _listener.Start();
            Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
            _ = Task.Run(AcceptAsync);
        }

        public int Port { get; }

        public byte[] Captured()
        {
            var all = new MemoryStream();
            lock (_records)
                foreach (var r in _records)
                    lock (r) r.WriteTo(all);
            return all.ToArray();
        }

        private async Task AcceptAsync()
        {
            try
            {
                while (true)
                {
                    var client = await _listener.AcceptSocketAsync(_stop.Token);
                    var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    lock (_sockets) _sockets.AddRange([client, server]);
                    try
                    {
                        await server.ConnectAsync(_target, _stop.Token);
                    }
                    catch (SocketException)
                    {
                        client.Dispose();
                        continue;
                    }
                    var record = new MemoryStream();
                    lock (_records) _records.Add(record);
                    _ = Task.Run(() => PumpAsync(client, server, record));
                    _ = Task.Run(() => PumpAsync(server, client, null));
                }
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException) { }
        }

        private async Task PumpAsync(Socket from, Socket to, MemoryStream? record)
        {
            var buffer = new byte[256 << 10];
            try
            {
                while (true)
                {
                    var n = await from.ReceiveAsync(buffer, SocketFlags.None, _stop.Token);
                    if (n == 0) break;
                    if (record != null)
                        lock (record) record.Write(buffer, 0, n);
                    await to.SendAsync(buffer.AsMemory(0, n), SocketFlags.None, _stop.Token);
                }
                to.Shutdown(SocketShutdown.Send);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                try { to.Shutdown(SocketShutdown.Both); } catch (Exception) { }
            }
        }

        public void Dispose()
        {
            _stop.Cancel();
            _listener.Stop();
            lock (_sockets)
                foreach (var s in _sockets) s.Dispose();
        }
    }
}
