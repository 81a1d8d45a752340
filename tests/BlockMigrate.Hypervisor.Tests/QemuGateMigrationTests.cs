using BlockMigrate.Hypervisors.Qemu;
using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// Local disks, not shared: the source guest's disk is the source shim on one image, the destination
/// QEMU's disk is the destination shim in gate mode on another, and <see cref="ToyDiskMover"/> plays the
/// engine inside the switchover callback. The guest resumes at the destination before its last blocks
/// have landed; the gate holds whatever touches them; the destination image must still hold every
/// write, newest last.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class QemuGateMigrationTests
{
    private const int Blocks = 4096;
    private const long ImageBytes = Blocks * GuestDisk.BlockSize;
    private TempDir _dir = null!;
    private readonly List<IDisposable> _owned = [];

    [OneTimeSetUp]
    public void CreateDir() => _dir = new TempDir("hv-gate");

    [OneTimeTearDown]
    public void StopAll()
    {
        for (var i = _owned.Count - 1; i >= 0; i--)
            _owned[i].Dispose();
        _dir?.Dispose();
    }

    private T Own<T>(T d) where T : IDisposable
    {
        _owned.Add(d);
        return d;
    }

    [Test, CancelAfter(60_000)]
    public async Task Guest_resumes_before_the_last_blocks_land_and_the_destination_disk_holds_every_write(CancellationToken ct)
    {
        string src = _dir["src.img"], dst = _dir["dst.img"];
        await Tool.CheckAsync("truncate", ["-s", $"{ImageBytes}", src]);
        await Tool.CheckAsync("truncate", ["-s", $"{ImageBytes}", dst]);
        var sourceMap = Own(DirtyMap.Create(_dir["src.map"], (ulong)ImageBytes, 4096));
        var destinationMap = Own(DirtyMap.Create(_dir["dst.map"], (ulong)ImageBytes, 4096));
        destinationMap.SetState(MapState.Gate);
        var sourceDisk = Own(NbdkitServer.Start(_dir.Path, NbdkitServer.FilterArgs(src, _dir["src.map"])));
        var destinationDisk = Own(NbdkitServer.Start(_dir.Path, NbdkitServer.FilterArgs(dst, _dir["dst.map"], gate: true)));

        var source = Own(QemuGuest.Start(_dir.Path, new QemuGuestOptions { Name = "src", DiskSocket = sourceDisk.Socket, Blocks = Blocks }));
        await source.Serial.WaitForAsync(@"PROGRESS seq=100\b", TimeSpan.FromSeconds(60));
        var mover = new ToyDiskMover(src, sourceMap, dst, destinationMap);
        mover.BulkCopy();
        for (var round = 0; round < 2; round++)
            mover.CopyDirtyRound();

        var destination = Own(QemuGuest.Start(_dir.Path, new QemuGuestOptions
        {
            Name = "dst", DiskSocket = destinationDisk.Socket, Blocks = Blocks, Incoming = true, Paused = true,
        }));
        await using var destinationObserver = await QmpClient.ConnectAsync(destination.ObserverQmpSocket, TimeSpan.FromSeconds(10), ct);
        // Only now may everything wait: QEMU reads sector 0 while it realizes virtio-blk (CHS geometry
        // guess, in its main loop), so a destination gated from the start never answers its monitor.
        // Nothing else reads before the final bitmap: the guest cannot run before the switchover.
        await destinationObserver.ExecuteAsync("query-status", null, ct);
        destinationMap.SetState(MapState.GateAll);
        using var resumes = destinationObserver.Subscribe("RESUME");
        await using var hv = new QemuHypervisor(new QemuOptions
        {
            SourceQmp = source.QmpSocket,
            DestinationQmp = destination.QmpSocket,
            MigrationUri = "unix:" + _dir["mig.sock"],
            MemoryPlaintext = true,
            MaxBandwidth = 1L << 30,
        });
        await hv.PrepareAsync(ct);
        var finalBlocks = 0;
        Task<DateTimeOffset>? landing = null;
        var stoppedAt = -1L;
        var report = await hv.MigrateAsync(_ =>
        {
            stoppedAt = source.Serial.LastProgress();
            (finalBlocks, landing) = mover.Switchover(perBlock: TimeSpan.FromMilliseconds(150));
            return Task.CompletedTask;
        }, ct);
        var resumed = (await resumes.WaitAsync("RESUME", null, ct)).Timestamp;
        var lastLanded = await landing!;
        TestContext.Out.WriteLine($"report: {report}; final blocks {finalBlocks}; resumed {(lastLanded - resumed).TotalMilliseconds:0} ms before the last landed; gate held requests {destinationMap.Info().Gated.TotalMilliseconds:0} ms");

        Assert.That(finalBlocks, Is.GreaterThan(0), "the guest wrote during the memory copy: there must be a final set");
        Assert.That(resumed, Is.LessThan(lastLanded), "the destination resumed only after every block landed: the gate was not needed");
        Assert.That(destinationMap.Info().GatedBlocks, Is.EqualTo(0UL));
        var first = await destination.Serial.WaitForProgressBeyondAsync(stoppedAt, TimeSpan.FromSeconds(30));
        await destination.Serial.WaitForProgressBeyondAsync(first + 100, TimeSpan.FromSeconds(30));
        Assert.That(destination.Serial.Text(), Does.Not.Contain("WRITE-ERR"));

        await destinationObserver.ExecuteAsync("stop", null, ct);
        var verdict = GuestDisk.Verify(dst, Blocks);
        Assert.That(verdict.Ok, verdict.ToString());
        Assert.That(verdict.MaxSeq, Is.GreaterThan(first));
    }
}
