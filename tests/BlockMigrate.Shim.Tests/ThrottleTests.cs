using System.Diagnostics;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Shim.Tests;

/// <summary>The throttle set through the map slows the guest's writes, and only its writes.</summary>
[CancelAfter(180_000)]
public class ThrottleTests
{
    [Test]
    public async Task Throttle_slows_writes_to_the_set_rate()
    {
        using var shim = ShimHarness.Start(32L << 20);
        const long rate = 2L << 20, total = 8L << 20;
        shim.Map.SetThrottle(rate);
        Assert.That(shim.Map.Info().ThrottleBytesPerSecond, Is.EqualTo(rate));

        var sw = Stopwatch.StartNew();
        await shim.QemuIoAsync($"write -P 0x61 0 {total / 2}", $"write -P 0x62 {total / 2} {total / 2}");
        sw.Stop();

        // whatever burst the bucket allows, at most one second's worth, 8 MiB at 2 MiB/s takes >= 3 s
        Assert.That(sw.Elapsed, Is.GreaterThanOrEqualTo(TimeSpan.FromSeconds((double)(total - rate) / rate)));
        Assert.That(shim.Map.Info().Throttled, Is.GreaterThan(TimeSpan.FromSeconds(1)));
    }

    [Test]
    public async Task Removing_the_throttle_at_run_time_releases_the_writer()
    {
        using var shim = ShimHarness.Start(32L << 20);
        shim.Map.SetThrottle(64 * 1024);
        // 16 MiB at 64 KiB/s would take minutes; lifting the throttle lets it finish
        var write = Tool.CheckAsync("qemu-io", ["-f", "raw", "-c", "write -P 1 0 16M", shim.Uri]);
        await Task.Delay(1500);
        Assert.That(write.IsCompleted, Is.False, "the writer must be held by the throttle");
        shim.Map.SetThrottle(0);
        await write.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.That(shim.Map.Info().Throttled, Is.GreaterThan(TimeSpan.FromSeconds(1)));
    }

    [Test]
    public async Task Reads_are_never_throttled()
    {
        using var shim = ShimHarness.Start(32L << 20);
        shim.Map.SetThrottle(1024);
        // 32 MiB at 1 KiB/s would take nine hours if reads were throttled
        await Tool.CheckAsync("qemu-io", ["-f", "raw", "-c", "read 0 32M", shim.Uri], TimeSpan.FromSeconds(60));
        Assert.That(shim.Map.Info().Throttled, Is.EqualTo(TimeSpan.Zero));
    }
}
