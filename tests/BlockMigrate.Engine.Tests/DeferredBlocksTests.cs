using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// A block the guest writes again after a round took it and before the round read it is deferred to a
/// later round (FrameProducer: the map holds it again), not sent twice; nothing deferred is lost.
/// </summary>
[CancelAfter(120_000)]
public class DeferredBlocksTests
{
    private const int HotBlocks = 2048;            // 8 MiB region rewritten over and over
    private const long HotOffset = 16L << 20;      // behind 16 MiB of random data the bulk copy reads first

    [Test]
    public async Task A_hot_region_is_deferred_by_the_bulk_copy_and_arrives_whole_with_every_acknowledged_write()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, 32L << 20, randomBytes: 24L << 20);
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys);
        var log = dir["writer.log"];
        using var writer = BackgroundProcess.Python("seqwriter.py", "write", source.Uri, "--blocks", HotBlocks.ToString(),
            "--offset", HotOffset.ToString(), "--log", log, "--rate", "2500");
        await Task.Delay(1000); // the region is written through once before the copy starts

        // ~6 MB/s: the bulk copy reaches the region ~2.5 s in, long after the writer went round it again
        var run = await MigrateRun.RunAsync(source, receiver.Address, keys, "--verify", "--keep-source-frozen", "--bandwidth", "6M");
        writer.Kill();

        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        var report = run.Report;
        TestContext.Out.WriteLine(report.ToString());
        Assert.That(report.GetProperty("blocks_deferred").GetInt64(), Is.GreaterThanOrEqualTo(HotBlocks / 2),
            "the bulk copy found most of the hot region written again and left it to a later round");
        Assert.That(report.GetProperty("verified").GetBoolean(), Is.True, "SHA-256 of the frozen source equals the committed destination");
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(20)), Is.Zero, receiver.Process.Stderr);

        var frozenAt = report.GetProperty("frozen_at_unix_ms").GetInt64();
        var acked = File.ReadAllLines(log).Select(l => l.Split(' ')).Where(p => p.Length == 2 && long.Parse(p[1]) < frozenAt)
            .Select(p => long.Parse(p[0])).DefaultIfEmpty(-1).Max();
        Assert.That(acked, Is.GreaterThan(HotBlocks), "the writer went round the region during the migration");
        var check = await Tool.RunAsync("/usr/bin/python3", [Path.Combine(Repo.Root, "tools", "seqwriter.py"), "check", receiver.Image("vda"),
            "--blocks", HotBlocks.ToString(), "--offset", HotOffset.ToString(), "--at-least", acked.ToString()]);
        Assert.That(check.ExitCode, Is.Zero, check.StandardOutput);
        var same = await Tool.BlockMigrateAsync("verify", source.Image, receiver.Image("vda"));
        Assert.That(same.ExitCode, Is.Zero, same.StandardOutput + same.StandardError);
        source.Map.Thaw();
    }

    [Test]
    public async Task Without_a_writer_nothing_is_deferred()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, 16L << 20, randomBytes: 8L << 20);
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys);
        var run = await MigrateRun.RunAsync(source, receiver.Address, keys, "--verify");
        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        Assert.That(run.Report.GetProperty("blocks_deferred").GetInt64(), Is.Zero);
        Assert.That(run.Report.GetProperty("verified").GetBoolean(), Is.True);
    }
}
