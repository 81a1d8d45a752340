using BlockMigrate.Cli.Commands;
using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>A disk migrated while a writer keeps writing through the shim arrives whole.</summary>
[CancelAfter(120_000)]
public class MigrationUnderWriterTests
{
    private const int SeqBlocks = 2048; // 8 MiB of sequence-numbered 4 KiB blocks at the start of the disk

    [Test]
    public async Task Destination_equals_source_at_freeze_and_keeps_every_acknowledged_write()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, 32L << 20);
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys);
        var log = dir["writer.log"];
        using var writer = BackgroundProcess.Python("seqwriter.py", "write", source.Uri, "--blocks", SeqBlocks.ToString(), "--log", log, "--rate", "3000");
        await Task.Delay(1000);

        var run = await MigrateRun.RunAsync(source, receiver.Address, keys, "--verify", "--keep-source-frozen", "--timeline", dir["timeline.svg"]);
        writer.Kill();

        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        var report = run.Report;
        // the picture: its marks where the report's times are, the switchover shaded (no hypervisor: STOP to the hand-over)
        var timeline = report.GetProperty("timeline");
        TimelinePicture.Load(dir["timeline.svg"]).AssertMatchesReport(timeline);
        Assert.That(TimelinePicture.ReportMarks(timeline), Does.Not.ContainKey("RESUME"), "no hypervisor, no RESUME");
        Assert.That(timeline.GetProperty("pause").GetProperty("guest").GetBoolean(), Is.False);
        Assert.That(report.GetProperty("verified").GetBoolean(), Is.True, "SHA-256 of the frozen source equals the committed destination");
        Assert.That(report.GetProperty("downtime_estimate_ms").ValueKind, Is.EqualTo(System.Text.Json.JsonValueKind.Number),
            "the prediction the engine switched over on is reported beside the measured downtime");
        Assert.That(report.GetProperty("downtime_estimate_ms").GetDouble(), Is.GreaterThanOrEqualTo(0).And.LessThanOrEqualTo(300),
            "it switched over on an estimate within --max-downtime (300 ms)");
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(20)), Is.Zero, receiver.Process.Stderr);

        // every write acknowledged before the freeze is on the destination, and the destination is
        // exactly the state after its newest write (no torn or stale block)
        var frozenAt = report.GetProperty("frozen_at_unix_ms").GetInt64();
        var acked = File.ReadAllLines(log).Select(l => l.Split(' ')).Where(p => p.Length == 2 && long.Parse(p[1]) < frozenAt)
            .Select(p => long.Parse(p[0])).DefaultIfEmpty(-1).Max();
        Assert.That(acked, Is.GreaterThan(200), "the writer was writing during the migration");
        var check = await Tool.RunAsync("/usr/bin/python3", [Path.Combine(Repo.Root, "tools", "seqwriter.py"), "check", receiver.Image("vda"),
            "--blocks", SeqBlocks.ToString(), "--at-least", acked.ToString()]);
        Assert.That(check.ExitCode, Is.Zero, check.StandardOutput);

        // byte for byte: the source is still frozen (--keep-source-frozen), so it is the source at the freeze
        var same = await Tool.BlockMigrateAsync("verify", source.Image, receiver.Image("vda"));
        Assert.That(same.ExitCode, Is.Zero, same.StandardOutput + same.StandardError);
        Assert.That(source.Map.Info().State.HasFlag(MapState.Frozen), Is.True);
        source.Map.Thaw();
    }

    [Test]
    public async Task Source_map_is_thawed_after_commit_with_no_hypervisor_and_the_writer_goes_on()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, 16L << 20);
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys);
        using var writer = BackgroundProcess.Python("seqwriter.py", "write", source.Uri, "--blocks", "256", "--rate", "500");
        await Task.Delay(500);

        var run = await MigrateRun.RunAsync(source, receiver.Address, keys);

        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        var info = source.Map.Info();
        Assert.That(info.State & (MapState.Frozen | MapState.Tracking), Is.EqualTo(MapState.None));
        Assert.That(info.ThrottleBytesPerSecond, Is.Zero);
        var writes = info.Writes;
        await Task.Delay(500);
        Assert.That(source.Map.Info().Writes, Is.GreaterThan(writes), "the writer is not held after the commit");
        Assert.That(run.Report.GetProperty("verified").ValueKind, Is.EqualTo(System.Text.Json.JsonValueKind.Null), "not asked to verify, not claimed");
    }

    [Test]
    public async Task A_timeline_that_cannot_be_written_after_the_commit_is_exit_4_with_the_migration_done()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, 8L << 20);
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys);

        // /proc exists (the option is accepted before anything starts) but no file can be made there
        var run = await MigrateRun.RunAsync(source, receiver.Address, keys, "--timeline", "/proc/blockmigrate-timeline.svg");

        Assert.That(run.ExitCode, Is.EqualTo(MigrateCommand.AfterCommitFailed), run.ToString());
        Assert.That(run.ToString(), Does.Contain("committed, but the timeline was not written"));
        Assert.That(run.Report.GetProperty("timeline").GetProperty("samples").GetProperty("t").GetArrayLength(), Is.GreaterThan(0),
            "the report (and its series) came out all the same");
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(20)), Is.Zero, receiver.Process.Stderr);
    }
}
