using BlockMigrate.Engine;
using BlockMigrate.Hypervisors;
using BlockMigrate.Maps;
using BlockMigrate.TestSupport;
using CliWrap.Buffered;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// The engine's gate switchover, without a guest: a scripted hypervisor stands in for QEMU (it dirties
/// the source just before the switchover, then plays the destination VM through the destination shim
/// once the callback has returned), so the final set is large and the moment of the hand-over exact.
/// Real parts: both shims (the destination's in gate mode), `blockmigrate receive`, the engine, a
/// userspace WAN link (tools/wanem.py) slow enough that the final blocks take seconds to land.
/// </summary>
[CancelAfter(180_000)]
public class GateSwitchoverTests
{
    private const long Size = 40L << 20, FinalOffset = 24L << 20, FinalBytes = 6L << 20, Block = 4096;
    private const long FirstFinal = FinalOffset, LastFinal = FinalOffset + FinalBytes - Block;

    [Test]
    public async Task The_destination_runs_before_the_final_blocks_land_and_never_sees_a_stale_block(CancellationToken ct)
    {
        using var bed = await GateBed.StartAsync();
        Task<BufferedCommandResult>? destinationWrite = null;
        var vm = new ScriptedHypervisor(
            beforeSwitchover: () => bed.WriteSourceAsync($"write -P 0x5a {FinalOffset} {FinalBytes}"),
            afterSwitchover: async () =>
            {
                Assert.That(bed.Gate.Info().GatedBlocks, Is.GreaterThan(0ul), "handed over with final blocks still on the wire");
                // the destination VM writes the last final block (waits until the source's copy has landed) ...
                destinationWrite = bed.DestinationIoAsync($"write -P 0x77 {LastFinal} {Block}");
                // ... and reads the first one: it must get the source's newest data, never the old
                var read = await bed.DestinationIoAsync($"read -P 0x5a {FirstFinal} {Block}");
                Assert.That(read.ExitCode, Is.Zero, read.StandardOutput + read.StandardError);
                Assert.That(read.StandardOutput, Does.Not.Contain("verification failed"));
            });

        MigrationReport report;
        await using (var migration = bed.Migration(vm, SwitchoverMode.Gate))
            report = await migration.RunAsync(ct);

        Assert.That(vm.SwitchoverReturned, Is.True);
        Assert.That(report.Switchover, Is.EqualTo(SwitchoverMode.Gate));
        Assert.That(report.FinalBlocks, Is.GreaterThanOrEqualTo(FinalBytes / Block));
        Assert.That(report.CommitMs, Is.GreaterThan(report.DowntimeMs), "the commit came after the hand-over");
        TestContext.Out.WriteLine($"hand-over {report.DowntimeMs:0} ms after the freeze, commit {report.CommitMs:0} ms; gate held requests {bed.Gate.Info().Gated.TotalMilliseconds:0} ms");
        Assert.That(bed.Gate.Info().Gated, Is.GreaterThan(TimeSpan.Zero), "the destination's I/O waited on the gate");
        Assert.That(await bed.Receiver.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.Zero, bed.Receiver.Stderr);
        var write = await destinationWrite!;
        Assert.That(write.ExitCode, Is.Zero, write.StandardError);
        Assert.That(bed.Gate.Info().GatedBlocks, Is.Zero);
        bed.AssertDestinationIsSourceExcept(LastFinal, 0x77);
    }

    /// <summary>
    /// QEMU stops the guest, then drains its block requests in flight, then calls the switchover: a throttled shim
    /// would hold that drain, and the guest's pause, for as long as the backlog takes at the cap (5 s of a 5.6 s pause in
    /// a heavy-writer benchmark). When the adapter says the source stopped, the engine lifts the cap at once.
    /// </summary>
    [Test]
    public async Task The_throttle_is_lifted_as_soon_as_the_source_VM_stops(CancellationToken ct)
    {
        using var bed = await GateBed.StartAsync();
        ScriptedHypervisor vm = null!;
        vm = new ScriptedHypervisor(
            beforeSwitchover: () =>
            {
                bed.SourceMap.SetThrottle(64 << 10); // the guest is held to 64 KiB/s, as under a heavy writer
                vm.RaiseSourceStopped();
                Assert.That(bed.SourceMap.Info().ThrottleBytesPerSecond, Is.Zero, "the cap is gone before the switchover is called");
                return Task.CompletedTask;
            },
            afterSwitchover: () => Task.CompletedTask);

        MigrationReport report;
        await using (var migration = bed.Migration(vm, SwitchoverMode.Gate))
            report = await migration.RunAsync(ct);
        Assert.That(vm.SwitchoverReturned, Is.True);
        Assert.That(await bed.Receiver.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.Zero, bed.Receiver.Stderr);
    }

    /// <summary>
    /// The network's divert (Migration.SourceStopped, the tunnel takes the old address) starts at the hypervisor's
    /// stop signal (QEMU's STOP, before it drains the disks and calls the switchover), not at the switchover: a
    /// client packet sent in between is lost at the stopped source. An adapter without the signal gets it at the
    /// switchover's start. Either way it runs once.
    /// </summary>
    [TestCase(true, TestName = "The divert starts at the source VM's stop, before the switchover, and runs once")]
    [TestCase(false, TestName = "Without a stop signal from the hypervisor the divert starts at the switchover, once")]
    public async Task The_divert_starts_at_the_stop(bool adapterRaisesStop)
    {
        using var bed = await GateBed.StartAsync();
        var calls = 0;
        var callsAtSwitchover = -1;
        ScriptedHypervisor vm = null!;
        vm = new ScriptedHypervisor(
            beforeSwitchover: () =>
            {
                if (adapterRaisesStop) vm.RaiseSourceStopped();
                callsAtSwitchover = Volatile.Read(ref calls);
                return Task.CompletedTask;
            },
            afterSwitchover: () =>
            {
                if (adapterRaisesStop) vm.RaiseSourceStopped(); // a second STOP (e.g. a lost event re-sent) must not divert again
                return Task.CompletedTask;
            });

        await using (var migration = bed.Migration(vm, SwitchoverMode.Gate))
        {
            migration.SourceStopped = _ =>
            {
                Interlocked.Increment(ref calls);
                return Task.CompletedTask;
            };
            await migration.RunAsync(CancellationToken.None);
        }
        Assert.That(callsAtSwitchover, Is.EqualTo(adapterRaisesStop ? 1 : 0), "called at the stop, before the switchover");
        Assert.That(calls, Is.EqualTo(1), "called once");
        Assert.That(await bed.Receiver.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.Zero, bed.Receiver.Stderr);
    }

    /// <summary>The hand-over does not wait for a divert still running (the destination VM may resume); the migration
    /// waits for it before it reports.</summary>
    [Test]
    public async Task The_hand_over_does_not_wait_for_a_slow_divert_but_the_report_does(CancellationToken ct)
    {
        using var bed = await GateBed.StartAsync();
        var divert = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handedOver = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        ScriptedHypervisor vm = null!;
        vm = new ScriptedHypervisor(
            beforeSwitchover: () =>
            {
                vm.RaiseSourceStopped();
                return Task.CompletedTask;
            },
            afterSwitchover: () =>
            {
                handedOver.TrySetResult();
                return Task.CompletedTask;
            });

        MigrationReport report;
        await using (var migration = bed.Migration(vm, SwitchoverMode.Gate))
        {
            migration.SourceStopped = _ => divert.Task;
            var run = migration.RunAsync(ct);
            await handedOver.Task.WaitAsync(TimeSpan.FromSeconds(60), ct);
            Assert.That(divert.Task.IsCompleted, Is.False, "handed over while the divert still runs");
            await Task.Delay(1000, ct);
            Assert.That(run.IsCompleted, Is.False, "no report while the divert still runs");
            divert.SetResult();
            report = await run.WaitAsync(TimeSpan.FromSeconds(60), ct);
        }
        Assert.That(report.Switchover, Is.EqualTo(SwitchoverMode.Gate));
        // the migration closed (as the CLI does after the report): a --once receiver ends its session
        Assert.That(await bed.Receiver.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.Zero, bed.Receiver.Stderr);
    }

    /// <summary>A divert that has failed by the hand-over fails the migration before it (the source keeps the VM and
    /// its disks), as when the hand-over waited for it; one that fails after the hand-over is reported.</summary>
    [TestCase(true, TestName = "A divert failed before the hand-over aborts the migration, the source untouched")]
    [TestCase(false, TestName = "A divert that fails after the hand-over is reported as a failure after the hand-over")]
    public async Task A_failed_divert_is_reported(bool failsBeforeHandOver)
    {
        using var bed = await GateBed.StartAsync();
        var divert = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        ScriptedHypervisor vm = null!;
        vm = new ScriptedHypervisor(
            beforeSwitchover: async () =>
            {
                vm.RaiseSourceStopped();
                if (failsBeforeHandOver) divert.SetException(new IOException("divert broke"));
                await Task.Yield();
            },
            afterSwitchover: () =>
            {
                divert.TrySetException(new IOException("divert broke"));
                return Task.CompletedTask;
            });

        await using (var migration = bed.Migration(vm, SwitchoverMode.Gate))
        {
            migration.SourceStopped = _ => divert.Task;
            // a hand-over that waited for the divert would never come here (the divert fails only after it): time out
            var e = Assert.CatchAsync<BlockMigrateException>(() => migration.RunAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(90)));
            Assert.That(e!.Message, Does.Contain("divert broke"));
            if (failsBeforeHandOver)
            {
                Assert.That(e, Is.InstanceOf<MigrationException>(), e.ToString());
                Assert.That(vm.SwitchoverReturned, Is.False, "no hand-over");
            }
            else
            {
                Assert.That(e, Is.InstanceOf<AfterHandOverException>(), e.ToString());
                Assert.That(vm.SwitchoverReturned, Is.True);
            }
        }
        if (failsBeforeHandOver)
        {
            Assert.That(bed.SourceMap.Info().State & MapState.Frozen, Is.Not.EqualTo(MapState.Frozen), "the source map thawed: the VM may go on there");
        }
        else
            Assert.That(await bed.Receiver.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.Zero, bed.Receiver.Stderr);
    }

    [Test]
    public async Task Commit_mode_resumes_only_after_every_final_block_is_written(CancellationToken ct)
    {
        using var bed = await GateBed.StartAsync();
        ulong heldAtReturn = ulong.MaxValue;
        var vm = new ScriptedHypervisor(
            beforeSwitchover: () => bed.WriteSourceAsync($"write -P 0x5a {FinalOffset} {FinalBytes}"),
            afterSwitchover: () =>
            {
                heldAtReturn = bed.Gate.Info().GatedBlocks;
                return Task.CompletedTask;
            });

        MigrationReport report;
        await using (var migration = bed.Migration(vm, SwitchoverMode.Commit))
            report = await migration.RunAsync(ct);

        Assert.That(report.Switchover, Is.EqualTo(SwitchoverMode.Commit));
        Assert.That(heldAtReturn, Is.Zero, "nothing left to wait for when the destination may resume");
        Assert.That(report.CommitMs, Is.EqualTo(report.DowntimeMs), "the hand-over came at the commit");
        Assert.That(await bed.Receiver.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.Zero, bed.Receiver.Stderr);
        bed.AssertDestinationIsSourceExcept(null, 0);
    }

    [TestCase(true, TestName = "A hand-over cut mid-stream keeps its blocks held; a re-run finishes it from the outstanding record")]
    [TestCase(false, TestName = "A hand-over cut mid-stream with its outstanding record lost: the re-run sends everything and the receiver writes only held blocks")]
    public async Task A_cut_hand_over_is_finished_by_a_rerun_without_overwriting_the_destination(bool keepRecord)
    {
        using var bed = await GateBed.StartAsync();
        var vm = new ScriptedHypervisor(
            beforeSwitchover: () => bed.WriteSourceAsync($"write -P 0x5a {FinalOffset} {FinalBytes}"),
            afterSwitchover: async () =>
            {
                // the destination VM writes the first final block once it has landed, then the link dies
                var w = await bed.DestinationIoAsync($"write -P 0x66 {FirstFinal} {Block}");
                Assert.That(w.ExitCode, Is.Zero, w.StandardError);
                Assert.That(bed.Gate.Info().GatedBlocks, Is.GreaterThan(0ul), "still streaming when the link is cut");
                bed.Wan.Kill();
            });

        await using (var migration = bed.Migration(vm, SwitchoverMode.Gate))
        {
            var e = Assert.ThrowsAsync<AfterHandOverException>(() => migration.RunAsync(CancellationToken.None));
            Assert.That(e!.Message, Does.Contain("did not land").And.Contain("again"));
        }
        Assert.That(await bed.Receiver.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.EqualTo(1));
        Assert.That(bed.Receiver.Stderr, Does.Contain("keeps holding"));
        var held = bed.Gate.Info().GatedBlocks;
        Assert.That(held, Is.GreaterThan(0ul), "the blocks that did not land stay held at the destination");
        Assert.That(bed.SourceMap.Info().State & MapState.Frozen, Is.EqualTo(MapState.Frozen), "the source never runs again");
        Assert.That(ResumeCookie.Decode(bed.SourceMap.GetCookie()).State, Is.EqualTo(CookieState.HandedOver));
        if (!keepRecord) File.Delete(bed.SourceMapPath + ".outstanding");

        // the admin runs the same command again, against the receiver restarted
        using var receiver = await bed.StartReceiverAsync();
        var run = await Tool.BlockMigrateAsync("migrate", "--disk", $"vda={bed.SourceImage}:{bed.SourceMapPath}", "--to", bed.ReceiverAddress,
            "--key", bed.Keys.SourceKey, "--peer-fingerprint", bed.Keys.ReceiverFingerprint, "--json", "--timeout", "120");
        Assert.That(run.ExitCode, Is.Zero, run.StandardError);
        Assert.That(run.StandardError, Does.Contain(keepRecord ? "blocks were out" : "sending every block"));
        Assert.That(run.StandardOutput, Does.Contain("\"switchover\":\"finish\""));
        Assert.That(await receiver.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.Zero, receiver.Stderr);
        Assert.That(receiver.Stderr, Does.Contain("hand-over finished"));
        Assert.That(bed.Gate.Info().GatedBlocks, Is.Zero);
        Assert.That(ResumeCookie.Decode(bed.SourceMap.GetCookie()).State, Is.EqualTo(CookieState.None));
        Assert.That(bed.SourceMap.Info().State & MapState.Frozen, Is.EqualTo(MapState.Frozen), "still frozen: the VM lives at the destination");
        // the destination VM's write survived the re-sent data; everything else is the source's
        bed.AssertDestinationIsSourceExcept(FirstFinal, 0x66);
    }

    /// <summary>Calls the switchover like a hypervisor would, with hooks around it.</summary>
    private sealed class ScriptedHypervisor(Func<Task> beforeSwitchover, Func<Task> afterSwitchover) : IHypervisor
    {
        public string Name => "scripted";
        public bool SwitchoverReturned { get; private set; }
        public event Action? SourceStopped;

        /// <summary>What an adapter does when it sees the source VM stop (QEMU: the STOP event).</summary>
        public void RaiseSourceStopped() => SourceStopped?.Invoke();

        public Task PrepareAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public async Task<HypervisorReport> MigrateAsync(Func<CancellationToken, Task> switchover, CancellationToken cancellationToken)
        {
            await beforeSwitchover();
            await switchover(cancellationToken);
            SwitchoverReturned = true;
            await afterSwitchover();
            return new HypervisorReport(Name, TimeSpan.Zero, null, null, 0);
        }

        public Task AbortAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    /// <summary>Source shim, destination shim in gate mode on the image being received, receiver, WAN link.</summary>
    private sealed class GateBed : IDisposable
    {
        private readonly TwoHostBed _bed;
        private int _wanPort;

        private GateBed(TwoHostBed bed) => _bed = bed;

        public KeyPair Keys => _bed.Keys;
        public string SourceImage => _bed.SourceImage;
        public string SourceMapPath => _bed.SourceMap;
        private string DestinationImage => _bed.DestinationImage;
        public NbdkitServer SourceShim => _bed.SourceDisk;
        public NbdkitServer DestinationShim => _bed.DestinationDisk;
        public DirtyMap SourceMap { get; private set; } = null!;
        public DirtyMap Gate { get; private set; } = null!;
        public BackgroundProcess Receiver { get; private set; } = null!;
        public string ReceiverAddress { get; private set; } = "";
        public BackgroundProcess Wan { get; private set; } = null!;

        /// <summary>No guest: 8 MiB of random data at 8 MiB of a 40 MiB disk.</summary>
        public static async Task<GateBed> StartAsync()
        {
            var bed = new GateBed(await TwoHostBed.StartAsync(new TwoHostBedOptions
            {
                DirTag = "gate", DiskBytes = Size, FillOffset = 8L << 20, FillBytes = 8L << 20, GateBlockSize = (uint)Block, Guest = false,
            }));
            try
            {
                await bed.SetUpAsync();
                return bed;
            }
            catch
            {
                bed.Dispose();
                throw;
            }
        }

        private async Task SetUpAsync()
        {
            Gate = _bed.Own(DirtyMap.Open(_bed.DestinationMap));
            await Tool.CheckAsync("nbdinfo", ["--size", SourceShim.Uri]); // the filter creates the map on first connection
            SourceMap = _bed.Own(DirtyMap.Open(SourceMapPath));
            Receiver = await StartReceiverAsync();
            // 16 Mbit/s: the 6 MiB final set takes ~3 s to land
            string address;
            (Wan, address) = await _bed.StartWanAsync(ReceiverAddress, "16M", "5");
            _wanPort = int.Parse(address.Split(':')[1]);
        }

        public async Task<BackgroundProcess> StartReceiverAsync()
        {
            var (p, port) = await _bed.StartReceiverAsync();
            ReceiverAddress = "127.0.0.1:" + port;
            return p;
        }

        public Migration Migration(IHypervisor hypervisor, SwitchoverMode mode) => new(new MigrationOptions
        {
            Disks = [new DiskSpec("vda", SourceImage, SourceMapPath)],
            Host = "127.0.0.1",
            Port = _wanPort,
            KeyPath = Keys.SourceKey,
            PeerFingerprint = Keys.ReceiverFingerprint,
            Compress = false, // the final set is a pattern: uncompressed, it takes seconds on the wire
            Switchover = mode,
        }, hypervisor);

        public Task WriteSourceAsync(string command) => Tool.CheckAsync("qemu-io", ["-f", "raw", "-c", command, SourceShim.Uri]);

        public Task<BufferedCommandResult> DestinationIoAsync(string command) =>
            Tool.RunAsync("qemu-io", ["-f", "raw", "-c", command, DestinationShim.Uri], TimeSpan.FromSeconds(60));

        /// <summary>The destination image equals the source's, except one block that must hold <paramref name="pattern"/>.</summary>
        public void AssertDestinationIsSourceExcept(long? offset, byte pattern)
        {
            var source = File.ReadAllBytes(SourceImage);
            var destination = File.ReadAllBytes(DestinationImage);
            Assert.That(destination.Length, Is.EqualTo(source.Length));
            if (offset is { } o)
            {
                Assert.That(destination.AsSpan((int)o, (int)Block).ToArray().All(b => b == pattern), $"block at {o} holds the destination's own write");
                Array.Fill(source, pattern, (int)o, (int)Block);
            }
            var firstDiff = source.AsSpan().CommonPrefixLength(destination);
            Assert.That(firstDiff, Is.EqualTo(source.Length), $"destination differs from the source at byte {firstDiff}");
        }

        public void Dispose() => _bed.Dispose();
    }
}
