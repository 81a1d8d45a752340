using System.Text.Json.Nodes;
using BlockMigrate.Hypervisors;
using BlockMigrate.Hypervisors.Qemu;
using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// QemuHypervisor moving a real TCG guest that writes sequence-numbered blocks. Storage is shared: both
/// QEMUs attach to one export of our shim (nbdkit + blockmigrate filter), so these tests are about memory,
/// device state and the switchover point; the disk hand-over belongs to the engine. The switchover
/// callback freezes the shim as the engine does, which shows no guest write reaches the disk then. One source guest boots once for the fixture; the
/// abort cases run first, each against a fresh destination, and leave it running; the last test moves it.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class QemuMigrationTests : SharedDiskGuestFixture
{
    private const int Blocks = 4096;
    private bool _moved;
    private QemuGuest? _movedTo;
    private QemuGuest? _rerunTo;

    protected override string DirName => "hv-mig";
    protected override int DiskBlocks => Blocks;

    protected override QemuGuestOptions Guest(string name, bool incoming = false) => new()
    {
        Name = name,
        DiskSocket = _disk.Socket,
        Blocks = Blocks,
        Incoming = incoming,
        Paused = incoming,
    };

    private QemuOptions Options(QemuGuest destination, long? maxBandwidth = null) => Options(_source, destination, maxBandwidth);

    private QemuOptions Options(QemuGuest source, QemuGuest destination, long? maxBandwidth = null) => new()
    {
        SourceQmp = source.QmpSocket,
        DestinationQmp = destination.QmpSocket,
        MigrationUri = "unix:" + _dir[destination.Options.Name + "-mig.sock"],
        MemoryPlaintext = true, // the adapter alone, no engine to deliver a key (TLS: QemuNamespaceMigrationTests, MemoryEncryptionTests)
        MaxBandwidth = maxBandwidth ?? 1L << 30,
        DowntimeLimit = TimeSpan.FromMilliseconds(100),
    };

    private async Task AssertSourceRunsAndWritesAsync(CancellationToken ct)
    {
        Assert.That(await StatusAsync(_sourceObserver, ct), Is.EqualTo("running"));
        var progress = _source.Serial.LastProgress();
        await _source.Serial.WaitForProgressBeyondAsync(progress + 50, TimeSpan.FromSeconds(30));
    }

    [Test, Order(1), CancelAfter(90_000)]
    public async Task Abort_after_destination_dies_during_memory_copy_leaves_the_source_running(CancellationToken ct)
    {
        Assume.That(_moved, Is.False);
        var destination = StartDestination("dst-dies");
        var switchoverRan = false;
        await using var hv = new QemuHypervisor(Options(destination, maxBandwidth: 2 << 20)); // slow: seconds of copy
        await hv.PrepareAsync(ct);
        using var migrationEvents = _sourceObserver.Subscribe("MIGRATION");
        var migrating = hv.MigrateAsync(_ => { switchoverRan = true; return Task.CompletedTask; }, ct);
        await migrationEvents.WaitAsync("MIGRATION", e => e.DataString("status") == "active", ct);
        await Task.Delay(500, ct);
        Assert.That(hv.Progress, Is.Not.Null, "progress is reported while memory is copied");
        Assert.That(hv.Progress!.TotalBytes, Is.GreaterThan(0));
        destination.Kill();

        var e = Assert.ThrowsAsync<HypervisorException>(async () => await migrating);
        Assert.That(e!.Message, Does.Contain("failed"));
        await hv.AbortAsync(ct);

        Assert.That(switchoverRan, Is.False, "switchover must not run when the memory copy failed");
        await AssertSourceRunsAndWritesAsync(ct);
    }

    [Test, Order(2), CancelAfter(90_000)]
    public async Task Abort_at_the_switchover_point_resumes_the_paused_source(CancellationToken ct)
    {
        Assume.That(_moved, Is.False);
        var destination = StartDestination("dst-fails-commit");
        string? sourceStatusInCallback = null;
        await using var hv = new QemuHypervisor(Options(destination));
        await hv.PrepareAsync(ct);
        var migrating = hv.MigrateAsync(async c =>
        {
            sourceStatusInCallback = await StatusAsync(_sourceObserver, c);
            destination.Kill();
            throw new InvalidOperationException("destination lost before commit");
        }, ct);

        Assert.ThrowsAsync<InvalidOperationException>(async () => await migrating);
        Assert.That(sourceStatusInCallback, Is.EqualTo("finish-migrate").Or.EqualTo("paused"));
        await hv.AbortAsync(ct);
        await AssertSourceRunsAndWritesAsync(ct);
    }

    [Test, Order(3), CancelAfter(120_000)]
    public async Task Migration_runs_switchover_while_source_is_stopped_and_before_destination_runs(CancellationToken ct)
    {
        var destination = StartDestination("dst");
        await using var destinationObserver = await QmpClient.ConnectAsync(destination.ObserverQmpSocket, TimeSpan.FromSeconds(10), ct);
        using var destinationEvents = destinationObserver.Subscribe("RESUME");
        string? sourceStatus = null, destinationStatus = null;
        long progressAtSwitchover = -1, progressAfterHold = -1;
        ulong diskWritesAtSwitchover = 0, diskWritesAfterHold = 0;
        DateTimeOffset switchoverEnded = default;
        var calls = 0;
        var hold = TimeSpan.FromMilliseconds(300); // stands for the engine's final dirty set and commit

        await using var hv = new QemuHypervisor(Options(destination));
        var warnings = new List<string>();
        hv.Log += (level, line) => { if (level == Microsoft.Extensions.Logging.LogLevel.Warning) lock (warnings) warnings.Add(line); };
        await hv.PrepareAsync(ct);
        // a QEMU before 9.0 under TCG (these guests run TCG) loses guest writes in a live migration
        // (docs/qemu-ram-check.md): said at prepare; not said by a QEMU that has the fix
        var major = (int?)((await _sourceObserver.ExecuteObjectAsync("query-version", null, ct))["qemu"] as JsonObject)?["major"] ?? 0;
        if (major < 9) Assert.That(warnings, Has.Some.Contains("03bfc2188f").And.Contains("TCG"));
        else Assert.That(warnings, Has.None.Contains("03bfc2188f"));
        var report = await hv.MigrateAsync(async c =>
        {
            calls++;
            sourceStatus = await StatusAsync(_sourceObserver, c);
            destinationStatus = await StatusAsync(destinationObserver, c);
            progressAtSwitchover = _source.Serial.LastProgress();
            using var map = DirtyMap.Open(_dir["disk.map"]);
            map.Freeze(TimeSpan.FromSeconds(5));
            diskWritesAtSwitchover = map.Info().Writes;
            await Task.Delay(hold, c);
            diskWritesAfterHold = map.Info().Writes;
            map.Thaw();
            progressAfterHold = _source.Serial.LastProgress();
            switchoverEnded = DateTimeOffset.UtcNow;
        }, ct);
        _moved = true;

        Assert.That(calls, Is.EqualTo(1));
        Assert.That(sourceStatus, Is.EqualTo("finish-migrate").Or.EqualTo("paused"), "source VM stopped during switchover");
        Assert.That(destinationStatus, Is.EqualTo("inmigrate"), "destination cannot run during switchover");
        Assert.That(progressAfterHold, Is.EqualTo(progressAtSwitchover), "the guest ran at the source during switchover");
        Assert.That(diskWritesAfterHold, Is.EqualTo(diskWritesAtSwitchover), "a write reached the disk during switchover");
        Assert.That(diskWritesAtSwitchover, Is.GreaterThan(0UL), "the shim saw the guest's writes");
        var resumed = await destinationEvents.WaitAsync("RESUME", null, ct);
        Assert.That(resumed.Timestamp, Is.GreaterThanOrEqualTo(switchoverEnded.AddMilliseconds(-50)), "destination resumed before switchover returned");
        Assert.That(await StatusAsync(destinationObserver, ct), Is.EqualTo("running"));
        Assert.That(await StatusAsync(_sourceObserver, ct), Is.EqualTo("postmigrate"));

        Assert.That(hv.Progress?.Status, Is.EqualTo("completed"));
        Assert.Multiple(() =>
        {
            Assert.That(report.Hypervisor, Is.EqualTo("qemu"));
            Assert.That(report.MemoryBytes, Is.GreaterThan(1 << 20));
            Assert.That(report.HypervisorDowntime, Is.Not.Null);
            // Task.Delay's timer may fire a few ms early against the stopwatch and QEMU's clock (seen: 297 ms for 300)
            var atLeast = hold - TimeSpan.FromMilliseconds(25);
            Assert.That(report.GuestDowntime, Is.GreaterThanOrEqualTo(atLeast).And.LessThan(TimeSpan.FromSeconds(30)));
            Assert.That(report.Switchover, Is.GreaterThanOrEqualTo(atLeast));
            Assert.That(report.Total, Is.GreaterThanOrEqualTo(report.GuestDowntime!.Value));
        });
        TestContext.Out.WriteLine($"report: {report}");

        // the guest goes on at the destination: its counter continues past where the source stopped
        var first = await destination.Serial.WaitForProgressBeyondAsync(progressAtSwitchover, TimeSpan.FromSeconds(30));
        await destination.Serial.WaitForProgressBeyondAsync(first + 100, TimeSpan.FromSeconds(30));
        Assert.That(destination.Serial.Text(), Does.Not.Contain("WRITE-ERR"));

        await destinationObserver.ExecuteAsync("stop", null, ct);
        var verdict = GuestDisk.Verify(_dir["disk.img"], Blocks);
        Assert.That(verdict.Ok, verdict.ToString());
        Assert.That(verdict.MaxSeq, Is.GreaterThan(first));
        await destinationObserver.ExecuteAsync("cont", null, ct);
        _movedTo = destination;
    }

    [Test, Order(4), CancelAfter(120_000)]
    public async Task A_rerun_after_our_process_died_mid_copy_recovers_the_source_and_succeeds(CancellationToken ct)
    {
        Assume.That(_movedTo, Is.Not.Null, "needs the VM moved by the previous test");
        var vm = _movedTo!; // the VM now runs there: move it on
        await using var observer = await QmpClient.ConnectAsync(vm.ObserverQmpSocket, TimeSpan.FromSeconds(10), ct);
        using var migrationEvents = observer.Subscribe("MIGRATION");

        // first run: slow memory copy, then the orchestrator vanishes without aborting
        var orphan = StartDestination("dst-orphaned");
        var first = new QemuHypervisor(Options(vm, orphan, maxBandwidth: 2 << 20));
        await first.PrepareAsync(ct);
        var dying = first.MigrateAsync(_ => Task.CompletedTask, ct);
        await migrationEvents.WaitAsync("MIGRATION", e => e.DataString("status") == "active", ct);
        await first.DisposeAsync(); // its monitors close: as if the process was killed
        Assert.ThrowsAsync<QmpException>(async () => await dying);
        Assert.That((string?)(await observer.ExecuteObjectAsync("query-migrate", null, ct))["status"], Is.EqualTo("active"),
            "QEMU goes on migrating without us");

        // re-run to a fresh destination: Prepare cancels the stale migration, then all proceeds
        var destination = StartDestination("dst-rerun");
        await using var second = new QemuHypervisor(Options(vm, destination));
        await second.PrepareAsync(ct);
        Assert.That((string?)(await observer.ExecuteObjectAsync("query-status", null, ct))["status"], Is.EqualTo("running"));
        var switchovers = 0;
        var report = await second.MigrateAsync(_ => { switchovers++; return Task.CompletedTask; }, ct);

        Assert.That(switchovers, Is.EqualTo(1));
        Assert.That(report.MemoryBytes, Is.GreaterThan(0));
        var last = vm.Serial.LastProgress();
        await destination.Serial.WaitForProgressBeyondAsync(last + 50, TimeSpan.FromSeconds(30));
        await using var destinationObserver = await QmpClient.ConnectAsync(destination.ObserverQmpSocket, TimeSpan.FromSeconds(10), ct);
        await destinationObserver.ExecuteAsync("stop", null, ct);
        var verdict = GuestDisk.Verify(_dir["disk.img"], Blocks);
        Assert.That(verdict.Ok, verdict.ToString());
        _rerunTo = destination;
    }

    [Test, Order(5), CancelAfter(120_000)]
    public async Task A_process_dying_right_after_the_hand_over_is_continued_by_the_rerun(CancellationToken ct)
    {
        Assume.That(_rerunTo, Is.Not.Null, "needs the VM moved by the previous test");
        var vm = _rerunTo!;
        await using var observer = await QmpClient.ConnectAsync(vm.ObserverQmpSocket, TimeSpan.FromSeconds(10), ct);
        await observer.ExecuteAsync("cont", null, ct); // the previous test stopped it to check its disk
        var next = StartDestination("dst-continued");
        await using var nextObserver = await QmpClient.ConnectAsync(next.ObserverQmpSocket, TimeSpan.FromSeconds(10), ct);
        using var resumed = nextObserver.Subscribe("RESUME");

        // the first run reaches the hand-over, then dies before QEMU goes on (the callback never returns)
        using var dies = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var handedOver = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var first = new QemuHypervisor(Options(vm, next));
        await first.PrepareAsync(ct);
        var dying = first.MigrateAsync(async c =>
        {
            handedOver.TrySetResult();
            await Task.Delay(Timeout.Infinite, c);
        }, dies.Token);
        await handedOver.Task.WaitAsync(TimeSpan.FromSeconds(60), ct);
        await dies.CancelAsync();
        Assert.That(async () => await dying, Throws.InstanceOf<OperationCanceledException>());
        await first.DisposeAsync(); // its monitors close: as if the process was killed
        Assert.That((string?)(await observer.ExecuteObjectAsync("query-migrate", null, ct))["status"], Is.EqualTo("pre-switchover"));
        Assert.That(await StatusAsync(nextObserver, ct), Is.EqualTo("inmigrate"));
        var last = vm.Serial.LastProgress();

        // the re-run finishes the disks (shared storage here) and has QEMU go on
        await using var second = new QemuHypervisor(Options(vm, next));
        await second.ContinueAfterHandOverAsync(ct);
        await resumed.WaitAsync("RESUME", null, ct);
        Assert.That(await StatusAsync(nextObserver, ct), Is.EqualTo("running"));
        Assert.That(await StatusAsync(observer, ct), Is.EqualTo("postmigrate"), "the source never runs again");
        await next.Serial.WaitForProgressBeyondAsync(last + 50, TimeSpan.FromSeconds(30));
        await second.ContinueAfterHandOverAsync(ct); // again: nothing left to do
        Assert.That(await StatusAsync(nextObserver, ct), Is.EqualTo("running"));
    }

    [Test, Order(0), CancelAfter(30_000)]
    public async Task Prepare_refuses_a_destination_that_is_not_waiting_for_a_migration(CancellationToken ct)
    {
        var notIncoming = QemuGuest.Start(_dir.Path, Guest("not-incoming") with { Paused = true });
        _destinations.Add(notIncoming);
        await using var hv = new QemuHypervisor(new QemuOptions
        {
            SourceQmp = _source.QmpSocket, // running, so the destination check is what fails
            DestinationQmp = notIncoming.QmpSocket,
            MigrationUri = "unix:" + _dir["never.sock"],
        });
        var e = Assert.ThrowsAsync<HypervisorException>(() => hv.PrepareAsync(ct));
        Assert.That(e!.Message, Does.Contain("'prelaunch'").And.Contain("-incoming defer"));
    }
}
