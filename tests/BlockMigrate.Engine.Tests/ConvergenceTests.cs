using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>A writer that dirties blocks faster than the link drains them: only the throttle makes the copy converge.</summary>
[CancelAfter(120_000)]
public class ConvergenceTests
{
    // 2 MiB of sequential 4 KiB writes at full speed (tens of MB/s) against a 16 Mbit/s link (2 MB/s), uncompressed
    private static readonly string[] SlowLink = ["--bandwidth", "16M", "--no-compress"];

    [Test]
    public async Task Writer_faster_than_the_link_does_not_converge_without_throttling()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, 16L << 20, randomBytes: 1 << 20);
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys);
        using var writer = BackgroundProcess.Python("seqwriter.py", "write", source.Uri, "--blocks", "512");
        await Task.Delay(500);
        var hashBefore = source.Map.Info().Blocks;

        var run = await MigrateRun.RunAsync(source, receiver.Address, keys, [.. SlowLink, "--no-throttle", "--max-rounds", "4"]);

        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.Error, Does.Contain("did not converge in 4 rounds"));
        var info = source.Map.Info();
        Assert.That(info.ThrottleBytesPerSecond, Is.Zero);
        Assert.That(info.State & (MapState.Frozen | MapState.Tracking), Is.EqualTo(MapState.None));
        Assert.That(info.Throttled, Is.EqualTo(TimeSpan.Zero), "never throttled");
        Assert.That(info.DirtyBlocks, Is.GreaterThan(0ul), "the blocks not delivered are dirty again");
        Assert.That(hashBefore, Is.EqualTo(info.Blocks));
    }

    [Test]
    public async Task Writer_faster_than_the_link_converges_with_throttling()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, 16L << 20, randomBytes: 1 << 20);
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys);
        using var writer = BackgroundProcess.Python("seqwriter.py", "write", source.Uri, "--blocks", "512");
        await Task.Delay(500);

        var run = await MigrateRun.RunAsync(source, receiver.Address, keys, [.. SlowLink, "--max-rounds", "20", "--verify", "--keep-source-frozen"]);
        writer.Kill();

        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        var report = run.Report;
        Assert.That(report.GetProperty("verified").GetBoolean(), Is.True);
        Assert.That(report.GetProperty("throttled_seconds").GetDouble(), Is.GreaterThan(0));
        Assert.That(report.GetProperty("writes_delayed_seconds").GetDouble(), Is.GreaterThan(0), "the shim really held writes");
        Assert.That(report.GetProperty("throttle_tightest_bytes_per_second").GetInt64(), Is.GreaterThan(0).And.LessThan(64L << 20),
            "how hard: the tightest cap, below the writer's unthrottled rate");
        Assert.That(report.GetProperty("downtime_ms").GetDouble(), Is.LessThan(2000));
        Assert.That(source.Map.Info().ThrottleBytesPerSecond, Is.Zero, "the throttle is released at the end");
        source.Map.Thaw();
    }
}
