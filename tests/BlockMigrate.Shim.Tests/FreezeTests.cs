using System.Diagnostics;
using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Shim.Tests;

/// <summary>Freeze holds new writes (never fails them) until thaw, and returns only when in-flight writes drained.</summary>
[CancelAfter(120_000)]
public class FreezeTests
{
    [Test]
    public async Task Freeze_holds_a_write_until_thaw()
    {
        using var shim = ShimHarness.Start(8L << 20);
        shim.Map.Freeze(TimeSpan.FromSeconds(10));
        Assert.That(shim.Map.Info().State.HasFlag(MapState.Frozen));

        var write = Tool.RunAsync("qemu-io", ["-f", "raw", "-c", "write -P 0x77 65536 4096", shim.Uri]);
        await Task.Delay(1500);
        Assert.Multiple(() =>
        {
            Assert.That(write.IsCompleted, Is.False, "a write must wait while frozen");
            Assert.That(shim.Dirty(), Is.Empty);
        });

        shim.Map.Thaw();
        var r = await write.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.That(r.ExitCode, Is.Zero, "a held write completes, it is never failed: " + r.StandardError);
        Assert.That(shim.Dirty(), Is.EqualTo(new[] { new BlockRange(1, 1) }));
        Assert.That(shim.Map.Info().Frozen, Is.GreaterThan(TimeSpan.FromSeconds(1)));
    }

    [Test]
    public async Task Freeze_waits_for_writes_in_flight()
    {
        // nbdkit's delay filter beneath ours keeps each write in flight for 2 s
        using var shim = ShimHarness.Start(8L << 20, innerFilters: ["delay"], extra: ["delay-write=2000ms"]);
        var write = Tool.CheckAsync("qemu-io", ["-f", "raw", "-c", "write -P 0x78 0 4096", shim.Uri]);
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (shim.Map.Info().WritesInFlight == 0 && DateTime.UtcNow < deadline)
            await Task.Delay(10);
        Assert.That(shim.Map.Info().WritesInFlight, Is.EqualTo(1));

        var sw = Stopwatch.StartNew();
        shim.Map.Freeze(TimeSpan.FromSeconds(30));
        sw.Stop();
        Assert.Multiple(() =>
        {
            Assert.That(sw.Elapsed, Is.GreaterThan(TimeSpan.FromMilliseconds(500)), "freeze returned before the write drained");
            Assert.That(shim.Map.Info().WritesInFlight, Is.Zero);
            Assert.That(shim.Dirty(), Is.EqualTo(new[] { new BlockRange(0, 0) }), "the drained write is marked when freeze returns");
        });
        shim.Map.Thaw();
        await write;
    }

    [Test]
    public async Task Freeze_that_cannot_drain_in_time_fails_and_thaws()
    {
        using var shim = ShimHarness.Start(8L << 20, innerFilters: ["delay"], extra: ["delay-write=3000ms"]);
        var write = Tool.CheckAsync("qemu-io", ["-f", "raw", "-c", "write -P 0x79 0 4096", shim.Uri]);
        while (shim.Map.Info().WritesInFlight == 0) await Task.Delay(10);
        Assert.Throws<DirtyMapException>(() => shim.Map.Freeze(TimeSpan.FromMilliseconds(200)));
        Assert.That(shim.Map.Info().State.HasFlag(MapState.Frozen), Is.False);
        await write;
    }
}
