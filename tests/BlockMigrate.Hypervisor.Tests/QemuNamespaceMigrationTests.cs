using BlockMigrate.Transport;
using BlockMigrate.Hypervisors.Qemu;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// Source and destination QEMUs in two network namespaces joined by a veth shaped with tc tbf, the
/// memory stream over TCP between them with multifd + zstd (the slow-link setting). The disk is one
/// shim export on a unix socket, which both namespaces reach through the filesystem.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class QemuNamespaceMigrationTests
{
    private const int Blocks = 4096;
    private TempDir _dir = null!;
    private NamespacePair _net = null!;
    private NbdkitServer _disk = null!;
    private readonly List<QemuGuest> _guests = [];

    [OneTimeSetUp]
    public async Task SetUpHosts()
    {
        _dir = new TempDir("hv-ns");
        _net = await NamespacePair.CreateAsync("hv", rate: "100mbit");
        await Tool.CheckAsync("truncate", ["-s", $"{Blocks * GuestDisk.BlockSize}", _dir["disk.img"]]);
        _disk = NbdkitServer.Start(_dir.Path, NbdkitServer.FilterArgs(_dir["disk.img"], _dir["disk.map"]));
    }

    [OneTimeTearDown]
    public void TearDownHosts()
    {
        foreach (var g in _guests)
            g.Dispose();
        _disk?.Dispose();
        _net?.Dispose();
        _dir?.Dispose();
    }

    private QemuGuest Start(string name, string ns, bool incoming)
    {
        var g = QemuGuest.Start(_dir.Path, new QemuGuestOptions
        {
            Name = name, DiskSocket = _disk.Socket, Blocks = Blocks, Namespace = ns, Incoming = incoming, Paused = incoming,
        });
        _guests.Add(g);
        return g;
    }

    /// <summary>Bytes the namespace's eth0 has sent (from <c>ip -s link</c>).</summary>
    private static async Task<long> TxBytesAsync(string ns)
    {
        var r = await Tool.CheckAsync("ip", ["-n", ns, "-s", "-o", "link", "show", "eth0"]);
        // "... TX: bytes packets ... \    123 4 ..." on one line with -o
        var f = r.StandardOutput.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var tx = Array.IndexOf(f, "TX:");
        return long.Parse(f[tx + 1 + Array.IndexOf(f[(tx + 1)..], "\\") + 1]);
    }

    private sealed class Disposer(Action action) : IDisposable
    {
        public void Dispose() => action();
    }

    [Test, CancelAfter(180_000)]
    public async Task Migration_over_a_shaped_link_between_namespaces_with_multifd_zstd(CancellationToken ct)
    {
        var source = Start("src", _net.Source, incoming: false);
        await source.Serial.WaitForAsync(@"PROGRESS seq=100\b", TimeSpan.FromSeconds(60));
        var destination = Start("dst", _net.Destination, incoming: true);
        await using var destinationObserver = await QmpClient.ConnectAsync(destination.ObserverQmpSocket, TimeSpan.FromSeconds(10), ct);

        long progressAtSwitchover = -1;
        await using var hv = new QemuHypervisor(new QemuOptions
        {
            SourceQmp = source.QmpSocket,
            DestinationQmp = destination.QmpSocket,
            MigrationUri = $"tcp:{_net.DestinationAddress}:4444",
            IncomingUri = "tcp:0.0.0.0:4444",
            Multifd = true,
            MultifdChannels = 2,
            MultifdCompression = "zstd",
            DowntimeLimit = TimeSpan.FromMilliseconds(300),
            AutoConverge = true,
        });
        // what the engine and the receiver do (both hosts share this file system): the memory stream is TLS-PSK
        var keyDir = MemoryKey.WriteDirectory(hv.MemoryKey!);
        using var removeKey = new Disposer(() => MemoryKey.Remove(keyDir));
        hv.MemoryKeyDelivered(keyDir);
        await hv.PrepareAsync(ct);
        await using (var sourceObserver = await QmpClient.ConnectAsync(source.ObserverQmpSocket, TimeSpan.FromSeconds(10), ct))
        {
            var caps = await sourceObserver.ExecuteAsync("query-migrate-capabilities", null, ct) as System.Text.Json.Nodes.JsonArray;
            bool On(string name) => caps!.Any(c => (string?)c?["capability"] == name && (bool?)c?["state"] == true);
            Assert.That(On("pause-before-switchover") && On("multifd") && On("auto-converge") && On("events"), caps!.ToJsonString());
        }
        var parameters = await destinationObserver.ExecuteObjectAsync("query-migrate-parameters", null, ct);
        Assert.That((string?)parameters["multifd-compression"], Is.EqualTo("zstd"), "both sides must agree on compression");
        Assert.That((string?)parameters["tls-creds"], Is.EqualTo(QemuHypervisor.TlsObjectId), "the destination must require TLS");

        var txBefore = await TxBytesAsync(_net.Source);
        var report = await hv.MigrateAsync(_ =>
        {
            progressAtSwitchover = source.Serial.LastProgress();
            return Task.CompletedTask;
        }, ct);
        var wire = await TxBytesAsync(_net.Source) - txBefore;
        TestContext.Out.WriteLine($"report: {report}; bytes sent on the source's link: {wire}");

        Assert.That((string?)(await destinationObserver.ExecuteObjectAsync("query-status", null, ct))["status"], Is.EqualTo("running"));
        Assert.That(report.MemoryBytes, Is.GreaterThan(0));
        // QEMU 7.2 counts memory before compression; zstd must have made the wire carry clearly less
        Assert.That(wire, Is.LessThan(report.MemoryBytes * 0.8), "multifd zstd compression did not act");
        Assert.That(report.GuestDowntime, Is.Not.Null.And.LessThan(TimeSpan.FromSeconds(30)));
        var first = await destination.Serial.WaitForProgressBeyondAsync(progressAtSwitchover, TimeSpan.FromSeconds(30));
        await destination.Serial.WaitForProgressBeyondAsync(first + 50, TimeSpan.FromSeconds(30));

        await destinationObserver.ExecuteAsync("stop", null, ct);
        var verdict = GuestDisk.Verify(_dir["disk.img"], Blocks);
        Assert.That(verdict.Ok, verdict.ToString());
    }
}
