using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// End to end, through the real CLI: a TCG guest whose disk is the source shim on its own image,
/// writing sequence-numbered blocks; <c>blockmigrate receive --once</c> at the destination, whose
/// image the destination shim serves in gate mode to a destination QEMU started with
/// <c>-incoming defer -S</c>; <c>blockmigrate migrate --hypervisor qemu</c> moves disk, memory and
/// devices. The guest keeps writing at the destination; the destination image must then hold every
/// block's newest record (nothing lost, nothing stale). See <see cref="WholeVmTestbed"/>.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class WholeVmMigrationTests
{
    private WholeVmTestbed? _bed;

    [TearDown]
    public void StopEverything()
    {
        _bed?.Dispose();
        _bed = null;
    }

    [Test, CancelAfter(240_000)]
    public async Task Guest_moves_on_loopback_and_the_destination_disk_holds_every_write(CancellationToken ct)
    {
        _bed = await WholeVmTestbed.StartAsync("lo");
        await MigrateAndCheckAsync(_bed, ct, "commit", "--switchover", "commit");
    }

    [Test, CancelAfter(300_000)]
    public async Task Guest_moves_between_namespaces_over_a_100mbit_link_with_multifd_zstd(CancellationToken ct)
    {
        _bed = await WholeVmTestbed.StartAsync("ns", rate: "100mbit");
        await MigrateAndCheckAsync(_bed, ct, "gate", "--multifd", "--memory-compression", "zstd", "--downtime-limit", "300", "--auto-converge");
    }

    private static async Task MigrateAndCheckAsync(WholeVmTestbed bed, CancellationToken ct, string switchover, params string[] extra)
    {
        var destination = bed.StartDestination();
        var (receiver, address) = await bed.StartReceiverAsync();
        var picture = bed.Dir["timeline.svg"];
        var migrate = bed.StartMigrate(address, destination, 1, [.. extra, "--timeline", picture]);
        var exit = await WholeVmTestbed.ExitOfAsync(migrate, TimeSpan.FromSeconds(220));
        Assert.That(exit, Is.Zero, $"migrate: {migrate.Stderr}\nreceiver: {receiver.Stderr}");
        Assert.That(await WholeVmTestbed.ExitOfAsync(receiver, TimeSpan.FromSeconds(30)), Is.Zero, receiver.Stderr);
        var report = WholeVmTestbed.Report(migrate);
        TestContext.Out.WriteLine(report.ToString());
        var stoppedAt = bed.Source.Serial.LastProgress();

        Assert.That(report.GetProperty("hypervisor").GetString(), Is.EqualTo("qemu"));
        Assert.That(report.GetProperty("switchover").GetString(), Is.EqualTo(switchover));
        // over the shaped link the disk copy measures it and paces QEMU's memory copy by it; on loopback it does not
        Assert.That(migrate.Stderr, bed.Net != null ? Does.Contain("qemu: max-bandwidth") : Does.Not.Contain("qemu: max-bandwidth"));
        Assert.That(report.GetProperty("commit_ms").GetDouble(), switchover == "gate"
            ? Is.GreaterThanOrEqualTo(report.GetProperty("downtime_ms").GetDouble())
            : Is.EqualTo(report.GetProperty("downtime_ms").GetDouble()));
        Assert.That(report.GetProperty("guest_downtime_ms").GetDouble(), Is.GreaterThan(0).And.LessThan(30_000));
        Assert.That(report.GetProperty("hypervisor_downtime_ms").GetDouble(), Is.GreaterThan(0));
        Assert.That(report.GetProperty("downtime_ms").GetDouble(), Is.GreaterThan(0));
        Assert.That(report.GetProperty("memory_bytes").GetInt64(), Is.GreaterThan(1 << 20));
        if (bed.Net != null) // TCP across the namespaces: the kernel shows the memory stream's bytes (zstd here: fewer than QEMU counts)
            Assert.That(report.GetProperty("memory_wire_bytes").GetInt64(), Is.GreaterThan(1 << 20).And.LessThan(report.GetProperty("memory_bytes").GetInt64() * 0.8));
        else
            Assert.That(report.GetProperty("memory_wire_bytes").ValueKind, Is.EqualTo(System.Text.Json.JsonValueKind.Null), "a unix socket is not metered");
        Assert.That(report.GetProperty("bytes_of_data").GetInt64(), Is.GreaterThanOrEqualTo(WholeVmTestbed.FillBytes));
        Assert.That(await WholeVmTestbed.StatusAsync(bed.Source, ct), Is.Not.EqualTo("running"), "the source must never run again");
        CheckTimeline(report, picture);

        var first = await destination.Serial.WaitForProgressBeyondAsync(stoppedAt, TimeSpan.FromSeconds(60));
        await destination.Serial.WaitForProgressBeyondAsync(first + 150, TimeSpan.FromSeconds(60));
        Assert.That(destination.Serial.Text(), Does.Not.Contain("WRITE-ERR"));
        await WholeVmTestbed.StopAsync(destination, ct);
        var verdict = GuestDisk.Verify(bed.DestinationImage, WholeVmTestbed.GuestBlocks);
        Assert.That(verdict.Ok, verdict.ToString());
        Assert.That(verdict.MaxSeq, Is.GreaterThan(first));
        Assert.That(bed.FillMatches(), "the rest of the disk differs between source and destination");
        using var gate = DirtyMap.Open(bed.DestinationMap);
        Assert.That(gate.Info().GatedBlocks, Is.Zero, "every gated block was released");
        Assert.That(gate.Info().State & (MapState.GateAll), Is.EqualTo(MapState.None));
    }

    /// <summary>
    /// The picture (<c>--timeline</c>) against the JSON report: QEMU's STOP and RESUME marked where the
    /// report's times put them, the guest's pause shaded between them and as long as the guest downtime
    /// the report gives; STOP, hand-over, RESUME in that order; memory bytes drawn from QEMU's counter.
    /// </summary>
    private static void CheckTimeline(System.Text.Json.JsonElement report, string picture)
    {
        var timeline = report.GetProperty("timeline");
        TestContext.Out.WriteLine($"timeline: {picture}");
        var svg = TimelinePicture.Load(picture);
        svg.AssertMatchesReport(timeline);
        var marks = TimelinePicture.ReportMarks(timeline);
        Assert.That(marks.Keys, Is.EquivalentTo(new[] { "STOP", "hand-over", "RESUME", "commit" }));
        Assert.That(marks["STOP"], Is.LessThan(marks["hand-over"]).And.LessThan(marks["RESUME"]));
        Assert.That(marks["hand-over"], Is.LessThan(marks["RESUME"]), "the destination resumes after the hand-over");
        Assert.That(timeline.GetProperty("pause").GetProperty("guest").GetBoolean(), Is.True);
        Assert.That((marks["RESUME"] - marks["STOP"]) * 1000, Is.EqualTo(report.GetProperty("guest_downtime_ms").GetDouble()).Within(1),
            "the shaded pause is the guest downtime of the report");
        var memory = timeline.GetProperty("samples").GetProperty("memory_bytes_per_second").EnumerateArray()
            .Where(v => v.ValueKind == System.Text.Json.JsonValueKind.Number).Select(v => v.GetDouble()).ToList();
        Assert.That(memory.Max(), Is.GreaterThan(0), "QEMU's memory bytes were sampled during its copy");
        Assert.That(svg.Series("rates"), Does.ContainKey("memory"));
        Assert.That(timeline.GetProperty("rounds").GetArrayLength(), Is.GreaterThanOrEqualTo(1), "at least the bulk copy");
    }

    [Test, CancelAfter(240_000)]
    public async Task Destination_qemu_dying_before_switchover_leaves_the_source_running_and_writing(CancellationToken ct)
    {
        _bed = await WholeVmTestbed.StartAsync("dd");
        var bed = _bed;
        var destination = bed.StartDestination();
        var (receiver, address) = await bed.StartReceiverAsync();
        // a slow memory copy, so that the destination can be killed in the middle of it
        var migrate = bed.StartMigrate(address, destination, 1, "--memory-bandwidth", "3M");
        await migrate.WaitForStderrLineAsync(@"phase: Memory$", TimeSpan.FromSeconds(120));
        await Task.Delay(1500, ct);
        Assert.That(migrate.HasExited, Is.False, "still copying memory when the destination dies");
        destination.Kill();

        var exit = await WholeVmTestbed.ExitOfAsync(migrate, TimeSpan.FromSeconds(90));
        var lines = migrate.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        TestContext.Out.WriteLine(migrate.Stderr);
        Assert.That(exit, Is.EqualTo(1));
        Assert.That(lines[^1], Does.StartWith("blockmigrate: "), "one line saying what failed");
        Assert.That(migrate.Stdout, Is.Empty, "no report for a failed migration");
        Assert.That(await WholeVmTestbed.ExitOfAsync(receiver, TimeSpan.FromSeconds(30)), Is.EqualTo(1), "the receiver did not commit");

        Assert.That(await WholeVmTestbed.StatusAsync(bed.Source, ct), Is.EqualTo("running"));
        var now = bed.Source.Serial.LastProgress();
        await bed.Source.Serial.WaitForProgressBeyondAsync(now + 150, TimeSpan.FromSeconds(60));
        using (var map = DirtyMap.Open(bed.SourceMap))
        {
            var info = map.Info();
            Assert.That(info.ThrottleBytesPerSecond, Is.Zero, "throttle off");
            Assert.That(info.State & (MapState.Frozen | MapState.Tracking), Is.EqualTo(MapState.None), "thawed, not tracking");
            Assert.That(info.DirtyBlocks, Is.GreaterThan(0UL), "what the guest wrote since is dirty for the next run");
        }
        await WholeVmTestbed.StopAsync(bed.Source, ct);
        var verdict = GuestDisk.Verify(bed.SourceImage, WholeVmTestbed.GuestBlocks);
        Assert.That(verdict.Ok, verdict.ToString());
    }

    [Test, CancelAfter(300_000)]
    public async Task Killed_migrate_is_rerun_and_resumes_with_fewer_bytes(CancellationToken ct)
    {
        _bed = await WholeVmTestbed.StartAsync("kill");
        var bed = _bed;
        var first = bed.StartDestination();
        var (receiver, address) = await bed.StartReceiverAsync();
        var migrate = bed.StartMigrate(address, first, 1, "--memory-bandwidth", "3M");
        await migrate.WaitForStderrLineAsync(@"phase: Memory$", TimeSpan.FromSeconds(120));
        await Task.Delay(1500, ct);
        Assert.That(migrate.HasExited, Is.False, "still copying memory when we die");
        migrate.Kill(); // SIGKILL: nothing of ours gets to clean up
        Assert.That(await WholeVmTestbed.MigrationStatusAsync(bed.Source, ct), Is.AnyOf("setup", "active", "pre-switchover"),
            "QEMU goes on migrating without us: the stale state the re-run must clean");
        Assert.That(await WholeVmTestbed.ExitOfAsync(receiver, TimeSpan.FromSeconds(60)), Is.EqualTo(1), "the receiver did not commit");

        // the old destination QEMU cannot take a second incoming migration: a fresh one, as the docs
        // say; the old one is left as it is (the re-run's cancel of the stale migration ends it)
        var destination = bed.StartDestination();
        (receiver, address) = await bed.StartReceiverAsync();
        var rerun = bed.StartMigrate(address, destination, 2);
        var exit = await WholeVmTestbed.ExitOfAsync(rerun, TimeSpan.FromSeconds(200));
        Assert.That(exit, Is.Zero, $"re-run: {rerun.Stderr}\nreceiver: {receiver.Stderr}");
        Assert.That(await WholeVmTestbed.ExitOfAsync(receiver, TimeSpan.FromSeconds(30)), Is.Zero, receiver.Stderr);
        var report = WholeVmTestbed.Report(rerun);
        TestContext.Out.WriteLine(report.ToString());
        Assert.That(report.GetProperty("resumed").GetBoolean(), Is.True, rerun.Stderr);
        for (var i = 0; i < 100 && !first.HasExited; i++) await Task.Delay(100, ct);
        Assert.That(first.HasExited, "the stale destination QEMU ends when the re-run cancels the stale migration");
        Assert.That(report.GetProperty("bytes_of_data").GetInt64(), Is.LessThan(WholeVmTestbed.FillBytes),
            "a full copy sends at least the random fill; a resumed one only what changed");
        Assert.That(File.Exists(bed.SourceMap + ".outstanding"), Is.False, "the outstanding record is gone after the commit");

        var stoppedAt = bed.Source.Serial.LastProgress();
        var firstAtDestination = await destination.Serial.WaitForProgressBeyondAsync(stoppedAt, TimeSpan.FromSeconds(60));
        await destination.Serial.WaitForProgressBeyondAsync(firstAtDestination + 100, TimeSpan.FromSeconds(60));
        await WholeVmTestbed.StopAsync(destination, ct);
        var verdict = GuestDisk.Verify(bed.DestinationImage, WholeVmTestbed.GuestBlocks);
        Assert.That(verdict.Ok, verdict.ToString());
        Assert.That(bed.FillMatches(), "the rest of the disk differs between source and destination");
    }
}
