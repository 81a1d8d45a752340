using Microsoft.Extensions.Logging;
using System.Diagnostics;
using System.Text.Json.Nodes;

namespace BlockMigrate.Hypervisors.Qemu;

// The switchover state machine, source side on the left, destination on the right:
//
//   migrate ──► setup/active (memory pre-copy, VM runs)
//           ──► STOP event, status pre-switchover (VM stopped, memory nearly all sent)
//                 switchover(ct): freeze disks, final dirty set gated at the dest  [dest: inmigrate, cannot run]
//                 (gate mode; commit mode also waits for the final blocks to commit) — the hand-over
//           ──► migrate-continue ──► device ──► completed                        [dest: paused]
//                                                                 cont ──► RESUME event [dest: running]
//
// With --postcopy (QemuOptions.Postcopy) the source is told migrate-start-postcopy once its first pass
// over memory is done (MIGRATION_PASS 2); unless the pre-copy converged first, it then stops as above
// (postcopy_start honours pause-before-switchover too: STOP, pre-switchover, the same hand-over), but
// migrate-continue sends only the device state and goes on sending pages:
//
//           ──► migrate-continue ──► postcopy-active (pages still sent) ──► completed
//                         [dest: inmigrate ──► paused, device state loaded] cont ──► RESUME [dest: running,
//                                                               faulting in the pages it still misses]
//
// so the destination is resumed as soon as it leaves inmigrate, not at the source's completed. From
// then on neither side has all of the memory: a broken stream or a dead QEMU loses the VM (PostcopyLost).
// Guest-visible downtime is the source's STOP timestamp to the destination's RESUME timestamp,
// both QEMU's own event times (wall clocks of the two hosts: keep them NTP-synchronised).
public sealed partial class QemuHypervisor
{
    private static readonly TimeSpan Poll = TimeSpan.FromMilliseconds(200);

    public event Action<LogLevel, string>? Log;

    /// <inheritdoc />
    public event Action? SourceStopped;

    private void Say(string line) => Log?.Invoke(LogLevel.Information, line);

    private void Ignored(string what, Exception e) => Log?.Invoke(LogLevel.Debug, $"{what} failed (ignored): {e.Message}");

    public async Task<HypervisorReport> MigrateAsync(Func<CancellationToken, Task> switchover, CancellationToken cancellationToken)
    {
        if (_phase != QemuPhase.Prepared || _source == null || _destination == null)
            throw new HypervisorException($"qemu: Migrate needs a prepared hypervisor (phase {_phase})");
        var source = _source;
        var destination = _destination;
        using var sourceEvents = source.Subscribe("STOP", "RESUME", "MIGRATION");
        using var destinationEvents = destination.Subscribe("RESUME", "MIGRATION");

        var started = Stopwatch.GetTimestamp();
        if (_linkRate is { } measured)
            await PaceByLinkAsync(source, measured, MemoryCompressed ? 2 : 1, cancellationToken);
        _wire = MemoryWireMeter.Start(_options.MigrationUri);
        if (_wire.Unavailable is { } why) Log?.Invoke(LogLevel.Debug, why);
        var probing = _linkRate == null && (_options.MaxBandwidth == null || _options.DowntimeLimit == null) && _wire.Unavailable == null;
        _phase = QemuPhase.Migrating;
        using var passes = _options.Postcopy ? source.Subscribe("MIGRATION_PASS") : null;
        await source.ExecuteAsync("migrate", new JsonObject { ["uri"] = _options.MigrationUri }, cancellationToken);

        DateTimeOffset? stoppedAt = null;
        TimeSpan? stopSeen = null; // from the start of the memory copy
        using (var pacing = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
        {
            var repacing = _pacedCap > 0 || _downtimeLimit > 0 || probing ? Task.Run(() => RepaceAsync(source, pacing.Token), CancellationToken.None) : Task.CompletedTask;
            var requesting = passes != null ? Task.Run(() => RequestPostcopyAsync(source, passes, started, pacing.Token), CancellationToken.None) : Task.CompletedTask;
            try
            {
                await WaitForSourceStatusAsync(source, sourceEvents, "pre-switchover", e =>
                {
                    if (stoppedAt != null) return;
                    stoppedAt = e;
                    stopSeen = Stopwatch.GetElapsedTime(started);
                    SourceStopped?.Invoke(); // before QEMU's drain of the guest's requests in flight completes
                }, cancellationToken);
            }
            finally
            {
                await pacing.CancelAsync();
                await repacing;
                await requesting;
            }
        }
        stoppedAt ??= DateTimeOffset.UtcNow; // STOP precedes pre-switchover; this only covers a lost event
        _wire?.Total(); // the channels' counts while they are all still open
        Say($"source stopped at {stoppedAt.Value:HH:mm:ss.fff} (STOP), in pre-switchover {Since(stoppedAt.Value)} later");

        // The source is stopped for good (finish-migrate) and the destination has not received the
        // final device state, so it cannot run: the one moment the disks may switch over.
        _phase = QemuPhase.Switchover;
        var switchoverStarted = Stopwatch.GetTimestamp();
        await switchover(cancellationToken);
        var switchoverTime = Stopwatch.GetElapsedTime(switchoverStarted);
        _phase = QemuPhase.Committed;

        // Past the hand-over the destination owns the VM: finish even if the caller gives up.
        using var finishing = new CancellationTokenSource(TimeSpan.FromMinutes(10));
        var ct = finishing.Token;
        Postcopied? postcopied = null;
        DateTimeOffset resumedAt;
        try
        {
            Say($"disks handed over {Since(stoppedAt.Value)} after STOP; migrate-continue");
            if (_postcopyRequested)
            {
                postcopied = await ContinueInPostcopyAsync(source, sourceEvents, destination, destinationEvents, stoppedAt.Value, ct);
                resumedAt = postcopied.ResumedAt;
            }
            else
            {
                await ContinueFromPreSwitchoverAsync(source, sourceEvents, ct);
                Say($"source completed {Since(stoppedAt.Value)} after STOP");
                await ResumeDestinationAsync(destination, () => Say($"destination loaded {Since(stoppedAt.Value)} after STOP; cont"), ct);
                resumedAt = await ResumedAtAsync(destinationEvents, stoppedAt.Value);
            }
        }
        catch (Exception e) when (e is not OperationCanceledException || _resumedInPostcopy)
        {
            await KeepSourceStoppedAsync(source);
            if (_resumedInPostcopy)
                throw new HypervisorException(PostcopyLost(e is OperationCanceledException ? "the memory stream stalled" : e.Message), e);
            throw new HypervisorException(
                "qemu: memory migration failed after the disks were handed over to the destination. The VM is stopped " +
                "at the source and must NOT be resumed there (its disk now lives at the destination); restart " +
                "the destination QEMU from its disk, or retry the memory migration. Cause: " + e.Message, e);
        }
        _phase = QemuPhase.Resumed;
        var total = Stopwatch.GetElapsedTime(started);
        if (_memoryKey != null)
            await DropMemoryTlsAsync(destination, ct); // the VM runs there now; its next migration brings its own key

        var info = await source.ExecuteObjectAsync("query-migrate", null, ct);
        Progress = ToProgress(info);
        var ram = info["ram"] as JsonObject;
        // ram.transferred already counts what the multifd channels sent (multifd-bytes is a subset).
        // With multifd compression QEMU 7.2 counts bytes before compression (measured here: 78 MB
        // counted, 29 MB on the wire with zstd), so this is an upper bound on the wire bytes then.
        var memoryBytes = (long?)ram?["transferred"] ?? 0;
        TimeSpan? qemuDowntime = info["downtime"] is JsonValue d ? TimeSpan.FromMilliseconds((long)d) : null;
        return new HypervisorReport(Name, total, qemuDowntime, resumedAt - stoppedAt.Value, memoryBytes)
        {
            MemoryWireBytes = _wire?.Total(),
            Switchover = switchoverTime,
            StoppedAt = stoppedAt,
            ResumedAt = resumedAt,
            PostcopyAfter = postcopied?.Switched == true ? stopSeen : null,
            PostcopyBytes = postcopied?.Switched == true ? (long?)ram?["postcopy-bytes"] : null,
            PostcopyTail = postcopied?.Switched == true ? postcopied.CompletedAt - resumedAt : null,
        };
    }

    private async Task<DateTimeOffset> ResumedAtAsync(QmpEventSubscription destinationEvents, DateTimeOffset stoppedAt)
    {
        var resumedAt = await TryWaitAsync(destinationEvents, "RESUME", TimeSpan.FromSeconds(5)) ?? DateTimeOffset.UtcNow;
        Say($"destination resumed at {resumedAt:HH:mm:ss.fff} (RESUME), {(resumedAt - stoppedAt).TotalMilliseconds:0} ms after STOP");
        return resumedAt;
    }

    private volatile bool _postcopyRequested; // migrate-start-postcopy was accepted before the source stopped
    private bool _resumedInPostcopy;          // the destination runs while the source still holds pages: no way back
    private volatile bool _postcopyStalled;   // WatchPostcopyAsync gave up

    /// <summary>How long the source may send no memory in post-copy before we give up waiting for it.</summary>
    internal static readonly TimeSpan PostcopyStall = TimeSpan.FromSeconds(60);

    /// <summary>
    /// <c>--postcopy</c>, while the pre-copy runs: at QEMU's second dirty-bitmap sync (MIGRATION_PASS 2, the
    /// end of the first pass over memory, as libvirt's <c>--postcopy-after-precopy</c>) set the post-copy
    /// bandwidth to the pre-copy's cap and send <c>migrate-start-postcopy</c>. QEMU then stops the guest at its
    /// next iteration unless the pre-copy converges first (its own check comes first). The cap matters on a
    /// slow link: QEMU 7.2 sends post-copy pages unpaced by default (<c>max-postcopy-bandwidth</c> 0), and a page
    /// the resumed guest faults on waits behind whatever fills the socket buffers. Best effort: if this fails,
    /// the pre-copy goes on as without --postcopy.
    /// </summary>
    private async Task RequestPostcopyAsync(QmpClient source, QmpEventSubscription passes, long started, CancellationToken ct)
    {
        try
        {
            var pass = await passes.WaitAsync("MIGRATION_PASS", e => (long?)e.Data?["pass"] >= 2, ct);
            var cap = _pacedCap > 0 ? _pacedCap : _options.MaxBandwidth ?? 0;
            await source.ExecuteAsync("migrate-set-parameters", new JsonObject { ["max-postcopy-bandwidth"] = cap }, ct);
            // set first, and not cancelled: once sent, QEMU may switch, and ContinueInPostcopyAsync also handles a pre-copy that converged
            _postcopyRequested = true;
            await source.ExecuteAsync("migrate-start-postcopy", null, CancellationToken.None);
            Say($"post-copy requested {Stopwatch.GetElapsedTime(started).TotalSeconds:0.0} s into the memory copy, after its first pass over memory " +
                $"(pass {(long?)pass.Data?["pass"]}); post-copy pages {(cap > 0 ? $"capped at {cap / 1e6:0.0} MB/s" : "unpaced")}");
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // the source stopped first: the pre-copy converged by itself
        }
        catch (QmpException e)
        {
            Log?.Invoke(LogLevel.Warning, $"post-copy could not be requested ({e.Message}); the memory copy goes on as pre-copy");
        }
    }

    /// <summary>What <see cref="ContinueInPostcopyAsync"/> saw: whether QEMU really switched, when the destination resumed and the source completed.</summary>
    private sealed record Postcopied(bool Switched, DateTimeOffset ResumedAt, DateTimeOffset CompletedAt);

    /// <summary>
    /// After the hand-over with post-copy requested: <c>migrate-continue</c>, then, at the same time, wait for the
    /// destination to have the device state (it leaves <c>inmigrate</c>: <c>paused</c>, as it was started with -S)
    /// and <c>cont</c> it, and wait for the source's <c>completed</c>, which in post-copy comes only once every page
    /// left has been sent. A source that fails before the destination resumed fails as in pre-copy; after that, see
    /// <see cref="PostcopyLost"/>. If the pre-copy converged before QEMU switched, the source goes <c>device</c> and
    /// <c>completed</c> as without --postcopy, and this still works.
    /// </summary>
    private async Task<Postcopied> ContinueInPostcopyAsync(QmpClient source, QmpEventSubscription sourceEvents, QmpClient destination,
        QmpEventSubscription destinationEvents, DateTimeOffset stoppedAt, CancellationToken ct)
    {
        await source.ExecuteAsync("migrate-continue", new JsonObject { ["state"] = "pre-switchover" }, ct);
        DateTimeOffset? switchedAt = null, completedAt = null;
        // the source's wait outlives ct (10 min): post-copy may take long; it ends on a stall instead
        using var watch = new CancellationTokenSource();
        using var ended = CancellationTokenSource.CreateLinkedTokenSource(ct, watch.Token);
        var completing = WaitForSourceStatusAsync(source, sourceEvents, "completed", _ => { }, watch.Token, (status, at) =>
        {
            if (status == "postcopy-active") switchedAt ??= at;
            if (status == "completed") completedAt ??= at;
        });
        var resuming = ResumeDestinationAsync(destination, () => Say($"destination loaded the device state {Since(stoppedAt)} after STOP; cont"), ended.Token);
        var stalls = Task.Run(() => WatchPostcopyAsync(source, watch), CancellationToken.None);
        try
        {
            if (await Task.WhenAny(completing, resuming) == completing)
                await completing; // throws when the source failed before the destination had its state
            await resuming;
            var resumedAt = await ResumedAtAsync(destinationEvents, stoppedAt);
            if (!completing.IsCompleted)
            {
                _resumedInPostcopy = true;
                Say($"post-copy: the guest runs at the destination and pulls its missing pages from the source ({(switchedAt is { } sw ? $"switched {(sw - stoppedAt).TotalMilliseconds:0} ms after STOP; " : "")}" +
                    "from now on a lost link or QEMU loses the VM)");
            }
            await completing;
            var done = completedAt ?? DateTimeOffset.UtcNow;
            var switched = switchedAt != null || _resumedInPostcopy;
            Say(switched
                ? $"source completed {(done - resumedAt).TotalMilliseconds:0} ms after the destination resumed (post-copy)"
                : $"source completed {Since(stoppedAt)} after STOP: the pre-copy converged before post-copy took over");
            return new Postcopied(switched, resumedAt, done);
        }
        catch
        {
            await watch.CancelAsync();
            await Task.WhenAll(completing, resuming).ContinueWith(t => t.Exception, TaskScheduler.Default); // observed; the first failure is rethrown
            if (_postcopyStalled)
                throw new HypervisorException($"qemu: the source sent no memory for {PostcopyStall.TotalSeconds:0} s in post-copy (status {Progress?.Status ?? "unknown"})");
            throw;
        }
        finally
        {
            await watch.CancelAsync();
            await stalls;
        }
    }

    /// <summary>Cancels <paramref name="watch"/> when the source's <c>ram.transferred</c> has not moved for <see cref="PostcopyStall"/>.</summary>
    private async Task WatchPostcopyAsync(QmpClient source, CancellationTokenSource watch)
    {
        long last = -1;
        var since = Stopwatch.GetTimestamp();
        try
        {
            while (!watch.IsCancellationRequested)
            {
                await Task.Delay(TimeSpan.FromSeconds(1), watch.Token);
                var info = await source.ExecuteObjectAsync("query-migrate", null, watch.Token);
                var sent = (long?)(info["ram"] as JsonObject)?["transferred"] ?? 0;
                if (sent != last || (string?)info["status"] == "completed") (last, since) = (sent, Stopwatch.GetTimestamp());
                else if (Stopwatch.GetElapsedTime(since) >= PostcopyStall)
                {
                    _postcopyStalled = true;
                    await watch.CancelAsync();
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (QmpException)
        {
            // the source's monitor is gone: the wait for 'completed' says so
        }
    }

    /// <summary>The error past the point of no return of post-copy (the destination runs, pages are still at the source).</summary>
    internal static string PostcopyLost(string cause) =>
        $"qemu: post-copy broke after the VM resumed at the destination ({cause}). Neither QEMU holds all of the guest's memory now: " +
        "do NOT resume the source (its disk is at the destination) and do not kill a QEMU that still runs. If both QEMUs still run " +
        "(query-migrate: postcopy-paused) and the link can be mended, resume the memory stream by hand: 'migrate-recover' with uri=ADDRESS " +
        "on the destination's monitor, then 'migrate' with uri=ADDRESS and resume=true on the source's (QEMU's post-copy recovery; " +
        "BlockMigrate does not do it for you and has not tested it). Otherwise the VM is lost: restart it at the destination from its disk, which is whole " +
        "there once the migration's final blocks have landed (if this run could not send them all, run the same migrate command again: it finishes the hand-over)";

    /// <summary>
    /// Memory bytes sent once the migration started: on the wire (<see cref="MemoryWireMeter"/>) when the
    /// kernel shows the stream's connections, else the source's <c>ram.transferred</c> (which counts multifd's
    /// bytes before their compression).
    /// </summary>
    public async Task<long?> MemoryBytesSentAsync(CancellationToken cancellationToken)
    {
        if (_phase is QemuPhase.Idle or QemuPhase.Prepared or QemuPhase.Aborted || _source is not { IsConnected: true } source) return null;
        if (_wire is { Unavailable: null } wire && wire.Total() is { } onWire) return onWire;
        var info = await source.ExecuteObjectAsync("query-migrate", null, cancellationToken);
        return (long?)(info["ram"] as JsonObject)?["transferred"];
    }

    /// <summary>
    /// Waits until the source's migration reaches <paramref name="wanted"/>, from MIGRATION events,
    /// polling query-migrate as well so a status reached before the subscription is not missed.
    /// Reports each STOP event's time to <paramref name="onStop"/>.
    /// </summary>
    private async Task WaitForSourceStatusAsync(QmpClient source, QmpEventSubscription events, string wanted,
        Action<DateTimeOffset> onStop, CancellationToken cancellationToken, Action<string, DateTimeOffset>? onStatus = null)
    {
        while (true)
        {
            using var tick = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            tick.CancelAfter(Poll);
            string? status = null;
            try
            {
                var e = await events.Reader.ReadAsync(tick.Token);
                if (e.Name == "STOP")
                    onStop(e.Timestamp);
                else if (e.Name == "MIGRATION")
                {
                    status = e.DataString("status");
                    if (status != null) onStatus?.Invoke(status, e.Timestamp);
                }
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                var info = await source.ExecuteObjectAsync("query-migrate", null, cancellationToken);
                status = (string?)info["status"];
                Progress = ToProgress(info);
                if (status != null) onStatus?.Invoke(status, DateTimeOffset.UtcNow);
            }
            catch (System.Threading.Channels.ChannelClosedException e)
            {
                throw new QmpException("wait for " + wanted, QmpException.DisconnectedClass,
                    "lost the source QEMU's monitor: " + (e.InnerException?.Message ?? e.Message), e);
            }
            if (status == wanted)
                return;
            if (status is "failed" or "cancelled" or "cancelling" or "postcopy-paused" or "postcopy-recover")
            {
                var info = await source.ExecuteObjectAsync("query-migrate", null, cancellationToken);
                var why = (string?)info["error-desc"] ?? status;
                throw new HypervisorException($"qemu: memory migration {status} before '{wanted}': {why}");
            }
            if (status == "completed")
                throw new HypervisorException($"qemu: migration completed without stopping at '{wanted}' (pause-before-switchover not honoured)");
        }
    }

    private static QemuMigrationProgress ToProgress(JsonObject info)
    {
        var ram = info["ram"] as JsonObject;
        return new QemuMigrationProgress((string?)info["status"] ?? "none",
            (long?)ram?["transferred"] ?? 0, (long?)ram?["remaining"] ?? 0, (long?)ram?["total"] ?? 0,
            (long?)ram?["dirty-pages-rate"] ?? 0, (double?)ram?["mbps"] ?? 0, DateTimeOffset.UtcNow);
    }

    private static async Task WaitForDestinationPausedAsync(QmpClient destination, CancellationToken cancellationToken)
    {
        // the destination leaves 'inmigrate' once it has loaded the whole device state
        while (true)
        {
            var status = await StatusAsync(destination, cancellationToken);
            if (status is "paused" or "running" or "prelaunch")
                return;
            if (status is not "inmigrate")
                throw new HypervisorException($"qemu: the destination QEMU is '{status}' after migration");
            await Task.Delay(20, cancellationToken);
        }
    }

    /// <summary>
    /// The process that handed the disks over died before QEMU went on: the source may still wait in
    /// <c>pre-switchover</c> (then <c>migrate-continue</c>), or have completed with the destination
    /// paused (then <c>cont</c>). A destination already running is left alone.
    /// </summary>
    public async Task ContinueAfterHandOverAsync(CancellationToken cancellationToken)
    {
        var source = _source ??= await QmpClient.ConnectAsync(_options.SourceQmp, _options.ConnectTimeout, cancellationToken);
        var destination = _destination ??= await QmpClient.ConnectAsync(_options.DestinationQmp, _options.ConnectTimeout, cancellationToken);
        using var sourceEvents = source.Subscribe("STOP", "RESUME", "MIGRATION");
        var status = (string?)(await source.ExecuteObjectAsync("query-migrate", null, cancellationToken))["status"];
        if (status == "pre-switchover")
        {
            Say("the source still waits at the hand-over (pre-switchover): migrate-continue");
            await ContinueFromPreSwitchoverAsync(source, sourceEvents, cancellationToken);
        }
        else if (status == "postcopy-active")
        {
            // the hand-over was done and post-copy runs: the destination has (or soon has) the device state
            Say("the source is in post-copy: cont the destination; the source goes on sending the pages left");
            await ResumeDestinationAsync(destination, () => Say("destination loaded the device state; cont unless it runs"), cancellationToken);
            _phase = QemuPhase.Resumed;
            await WaitForSourceStatusAsync(source, sourceEvents, "completed", _ => { }, cancellationToken);
            return;
        }
        else if (status != "completed")
        {
            await KeepSourceStoppedAsync(source);
            throw new HypervisorException($"qemu: the source's migration is '{status ?? "none"}', neither waiting at the hand-over nor completed; " +
                                          "the disks are at the destination: restart the VM there from its disk");
        }
        await ResumeDestinationAsync(destination, () => Say("destination loaded; cont unless it runs"), cancellationToken);
        _phase = QemuPhase.Resumed;
    }

    /// <summary>
    /// Past the hand-over the source VM must never run again, but QEMU restarts a VM whose migration
    /// fails after it stopped it (even from <c>pre-switchover</c>, e.g. when the destination QEMU dies
    /// while the device state is sent): its migration thread calls <c>vm_start</c> just after it has set
    /// the status to <c>failed</c>. So: if it runs, or starts within two seconds, <c>stop</c> it. QEMU's
    /// <c>stop</c> pauses the vCPUs and sends <c>STOP</c> at once, then drains the disks; a guest write
    /// issued since the restart waits at the source shim, whose map stays frozen after a hand-over, so
    /// the drain (and the reply, and that QEMU's monitor) may never come back: wait for the event,
    /// not the reply. Best effort: the error that brought us here is what gets reported.
    /// </summary>
    private async Task KeepSourceStoppedAsync(QmpClient source)
    {
        using var bounded = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        try
        {
            using var events = source.Subscribe("RESUME", "STOP");
            var running = await StatusAsync(source, bounded.Token) == "running"
                          || await TryWaitAsync(events, "RESUME", TimeSpan.FromSeconds(2)) != null;
            if (!running) return;
            var stop = source.ExecuteAsync("stop", null, bounded.Token);
            _ = stop.ContinueWith(t => t.Exception, TaskScheduler.Default); // observed; it may never be answered
            var stopped = await TryWaitAsync(events, "STOP", TimeSpan.FromSeconds(10)) != null;
            Say(!stopped
                ? "QEMU restarted the source VM after the failed migration and it did not stop: kill the source QEMU (its disk is at the destination)"
                : "QEMU restarted the source VM after the failed migration; stopped it again (its disk is at the destination)" +
                  (stop.IsCompleted ? "" : "; that QEMU now waits for a disk write the frozen source map holds: kill it"));
        }
        catch (Exception e) // best effort, see above
        {
            Say($"could not make sure the source VM stays stopped: {e.Message}");
        }
    }

    /// <summary>Lets the source, paused in <c>pre-switchover</c>, send the rest; returns at <c>completed</c>.</summary>
    private async Task ContinueFromPreSwitchoverAsync(QmpClient source, QmpEventSubscription sourceEvents, CancellationToken cancellationToken)
    {
        await source.ExecuteAsync("migrate-continue", new JsonObject { ["state"] = "pre-switchover" }, cancellationToken);
        await WaitForSourceStatusAsync(source, sourceEvents, "completed", _ => { }, cancellationToken);
    }

    /// <summary>Waits until the destination has loaded the whole state, then <c>cont</c> unless it already runs.</summary>
    private static async Task ResumeDestinationAsync(QmpClient destination, Action loaded, CancellationToken cancellationToken)
    {
        await WaitForDestinationPausedAsync(destination, cancellationToken);
        loaded();
        if (await StatusAsync(destination, cancellationToken) == "running") return;
        await destination.ExecuteAsync("cont", null, cancellationToken);
    }

    private double? _linkRate;
    private long _pacedCap;          // the max-bandwidth our pacing set (0: not pacing)
    private MemoryWireMeter? _wire;  // the memory stream's bytes on the wire, from Migrate on

    public void LinkRateMeasured(double bytesPerSecond) => _linkRate = bytesPerSecond;

    private Func<long>? _otherBytes; // the engine's bytes on the same link (its disk rounds)

    public void SharesLinkWith(Func<long> bytesSent) => _otherBytes = bytesSent;

    private bool MemoryCompressed => _options.Multifd && _options.MultifdCompression != "none";

    /// <summary>
    /// Once the link's rate is known (measured by the disk copy before the memory copy starts, or by
    /// <see cref="StreamLinkProbe"/> on the memory stream itself): QEMU's downtime-limit aimed at
    /// <see cref="AimedDowntimeMs"/> unless the admin gave one, and, unless the admin gave a
    /// --memory-bandwidth, max-bandwidth = 90% of the link in QEMU's units. Unpaced, QEMU fills its socket
    /// buffers (1-2 MB at 20 Mbit/s), stops the guest when it believes little is left, and the guest then
    /// waits for those buffers to drain: 930 ms of pause against 240 ms paced, in the 20 Mbit/s benchmark
    /// (docs/BENCHMARKS.md). QEMU 7.2 counts multifd's pages before compression, so the cap is that times
    /// <paramref name="ratio"/> (2 for compression until <see cref="RepaceAsync"/> measures it on the wire).
    /// </summary>
    private async Task PaceByLinkAsync(QmpClient source, double link, double ratio, CancellationToken cancellationToken)
    {
        if (_options.DowntimeLimit == null)
        {
            var aim = StartingAimMs(_losesTcgWrites);
            await source.ExecuteAsync("migrate-set-parameters", new JsonObject { ["downtime-limit"] = aim }, cancellationToken);
            _downtimeLimit = aim;
            Say($"downtime-limit {aim} ms{(_losesTcgWrites ? " (QEMU's own: TCG before QEMU 9.0, see the warning above)" : "")}, raised while the memory copy does not converge (up to {MaxRelaxedDowntimeMs} ms)");
        }
        if (_options.MaxBandwidth != null) return;
        var cap = PacedCap(link, ratio);
        if (cap >= QemuOptions.QemuDefaultMaxBandwidth || cap <= 0) return;
        await source.ExecuteAsync("migrate-set-parameters", new JsonObject { ["max-bandwidth"] = cap }, cancellationToken);
        _pacedCap = cap;
        Say($"max-bandwidth {cap / 1e6:0.0} MB/s: 90% of the {link / 1e6:0.0} MB/s link, times {ratio:0.00} bytes QEMU counts per byte on the wire" +
            (MemoryCompressed && !_repaced ? " (multifd compression; measured from now on)" : ""));
    }

    /// <summary>The cap for a link of <paramref name="link"/> bytes/s when QEMU counts <paramref name="ratio"/> bytes per byte on the wire.</summary>
    internal static long PacedCap(double link, double ratio) => (long)(link * 0.9 * Math.Clamp(ratio, MinRatio, MaxRatio));

    internal const double MinRatio = 0.9, MaxRatio = 8;
    private static readonly TimeSpan RepaceEvery = TimeSpan.FromMilliseconds(250);

    /// <summary>
    /// While the memory copy runs, every 250 ms: how many bytes QEMU counted (<c>ram.transferred</c>) per
    /// byte it wrote to its connections over the last half second (<see cref="MemoryWireMeter"/>), and how
    /// much waits in their send queues; the cap is then set so that the wire carries 90% of the link, less
    /// what brings longer queues back to 50 ms of the link within half a second (<see cref="Repace"/>).
    /// Why both: zstd shrinks this guest's RAM 2.4× overall but region by region from 1.2× to 3.6× (its
    /// compressed initramfs, its page cache), so a cap from a fixed ratio left a quarter of the link idle
    /// (100 Mbit/s benchmark), and one from the last ratio alone lagged each change of region; the queue
    /// term corrects the lag, and keeps the queue short, which is what the guest's pause waits for at the
    /// switchover. Best effort: a failed reading ends it and the cap stays.
    /// </summary>
    private async Task RepaceAsync(QmpClient source, CancellationToken ct)
    {
        var wire = _wire is { Unavailable: null } w ? w : null;
        var probe = _linkRate == null ? new StreamLinkProbe() : null;
        var window = new Queue<(long Counted, long Written, long Other, long At)>();
        double? ratio = null; // measured: until then the cap PaceByLinkAsync set stays
        long relaxedAt = 0;
        var origin = Stopwatch.GetTimestamp();
        try
        {
            while (!ct.IsCancellationRequested)
            {
                await Task.Delay(RepaceEvery, ct);
                var info = await source.ExecuteObjectAsync("query-migrate", null, ct);
                if ((string?)info["status"] != "active") continue;
                var syncs = (long?)(info["ram"] as JsonObject)?["dirty-sync-count"] ?? 0;
                if (_downtimeLimit > 0 && RelaxDowntime(_downtimeLimit, syncs, relaxedAt) is { } limit)
                {
                    await source.ExecuteAsync("migrate-set-parameters", new JsonObject { ["downtime-limit"] = limit }, ct);
                    Say($"downtime-limit {limit} ms: the memory copy has not converged after {syncs} passes");
                    (_downtimeLimit, relaxedAt) = (limit, syncs);
                }
                if (wire == null) continue;
                var counted = (long?)(info["ram"] as JsonObject)?["transferred"];
                // no connection seen (yet, or QEMU's stream leaves from another namespace): nothing to pace by this time;
                // going on keeps the downtime-limit's relax law above running (a return here ended it too)
                if (counted == null || wire.Read() is not { } r) continue;
                var written = r.Acked + r.Queued;
                var other = _otherBytes?.Invoke() ?? 0;
                var now = Stopwatch.GetTimestamp();
                window.Enqueue((counted.Value, written, other, now));
                if (window.Count > 3) window.Dequeue();
                var (c0, w0, o0, t0) = window.Peek();
                if (written - w0 >= 64 << 10 && counted.Value > c0) ratio = (double)(counted.Value - c0) / (written - w0);
                if (_linkRate is not { } link)
                {
                    if (probe!.Add(r.Acked, r.Queued, other, Stopwatch.GetElapsedTime(origin, now)) is not { } found) continue;
                    _linkRate = found;
                    Say($"link measured by the memory stream: {found / 1e6:0.0} MB/s on the wire (its send queues full; the disk copy was too small to measure it)");
                    await PaceByLinkAsync(source, found, ratio ?? (MemoryCompressed ? 2 : 1), ct);
                    continue;
                }
                if (_pacedCap <= 0) continue; // the admin's --memory-bandwidth, or a link too fast to pace
                var otherRate = now > t0 ? (other - o0) / Stopwatch.GetElapsedTime(t0, now).TotalSeconds : 0;
                if (ratio is not { } measured || Repace(_pacedCap, link, measured, r.Queued, otherRate) is not { } cap) continue;
                await source.ExecuteAsync("migrate-set-parameters", new JsonObject { ["max-bandwidth"] = cap }, ct);
                Log?.Invoke(LogLevel.Debug, $"max-bandwidth {cap / 1e6:0.0} MB/s: {measured:0.00} bytes counted per byte written, {r.Queued / 1e3:0} kB queued");
                if (!_repaced) Say($"max-bandwidth follows the memory's compression measured on the wire (first: {measured:0.00} bytes counted per byte written)");
                _repaced = true;
                _pacedCap = cap;
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
        }
        catch (Exception e) when (e is QmpException or HypervisorException or IOException)
        {
            Ignored("re-pacing the memory copy", e);
        }
    }

    private bool _repaced;
    private long _downtimeLimit; // the downtime-limit we aim at (0: the admin's or QEMU's, left alone)

    /// <summary>
    /// QEMU's downtime-limit when the admin gave none: QEMU stops the guest once what is left of its
    /// memory would take this long at the rate it measured. Its default, 300 ms, leaves up to 300 ms of
    /// pages for the pause although a light guest converges far lower; the disks' share of the pause is
    /// small in gate mode (the final set is gated, not sent, before the hand-over). So aim at 50 ms and
    /// relax while the copy does not converge (<see cref="RelaxDowntime"/>), up to 2 s.
    /// </summary>
    public const long AimedDowntimeMs = 50;

    /// <summary>Where the downtime-limit starts when the admin gave none and the link is measured: <see cref="AimedDowntimeMs"/>,
    /// or QEMU's own default on a source whose QEMU loses TCG writes (<c>CheckTcgDirtyTrackingAsync</c>): measured there, pages were
    /// lost when QEMU completed under a small limit (1 or 50 ms), never under its 300 ms.</summary>
    internal static long StartingAimMs(bool losesTcgWrites) =>
        losesTcgWrites ? (long)QemuOptions.QemuDefaultDowntimeLimit.TotalMilliseconds : AimedDowntimeMs;

    /// <summary>
    /// The law: from QEMU's 4th pass over memory (dirty-sync-count) on, every 2nd pass raises the limit
    /// by half, past QEMU's default up to <see cref="MaxRelaxedDowntimeMs"/>; null leaves it. A guest that
    /// dirties memory faster than a small limit allows thus converges a few passes later. Past 300 ms,
    /// because the paced copy's bandwidth is the link's, not QEMU's unpaced guess: a 128 MiB TCG guest at
    /// 99% CPU throttle still kept 1 MB dirty, which at 90% of 20 Mbit/s is 480 ms, and the copy ran for
    /// 500 passes (8 min) at 300 ms; unpaced, QEMU counts its socket buffers as bandwidth and stops the
    /// guest with as much left, which then waits for the buffers (962 ms of pause in the same run).
    /// </summary>
    public const long MaxRelaxedDowntimeMs = 2000;

    internal static long? RelaxDowntime(long current, long syncs, long relaxedAt)
    {
        if (current >= MaxRelaxedDowntimeMs || syncs < 4 || syncs - relaxedAt < 2) return null;
        return Math.Min(MaxRelaxedDowntimeMs, current * 3 / 2);
    }

    /// <summary>
    /// The law of <see cref="RepaceAsync"/>: the wire should carry 90% of the <paramref name="link"/>, less what
    /// the engine's disk rounds sent over the same half second (<paramref name="otherRate"/>, bytes/s), less
    /// (<paramref name="queued"/> − 50 ms of the link) / 0.5 s when the queues are longer, never under 30%;
    /// the cap is that in QEMU's units (× <paramref name="ratio"/>, bounded). Never more than 90%: the queue
    /// seen is the one of QEMU's own sockets, and a relay on the path (an SSH tunnel, a WAN emulator) takes
    /// what the link cannot carry into queues of its own, which this cannot see: in the 20 Mbit/s benchmark
    /// (a relay per stream) a cap over the link left 1.2 s of memory in them when the guest stopped. Null keeps <paramref name="current"/>:
    /// within 5% of it, or at or above QEMU's default (no pacing).
    /// </summary>
    internal static long? Repace(long current, double link, double ratio, long queued, double otherRate = 0)
    {
        var wire = Math.Clamp(link * 0.9 - Math.Max(0, otherRate) - Math.Max(0, queued - link * 0.05) / 0.5, link * 0.3, link * 0.9);
        var cap = (long)(wire * Math.Clamp(ratio, MinRatio, MaxRatio));
        return Math.Abs(cap - current) > current / 20 && cap < QemuOptions.QemuDefaultMaxBandwidth ? cap : null;
    }

    private static string Since(DateTimeOffset t) => $"{(DateTimeOffset.UtcNow - t).TotalMilliseconds:0} ms";

    private static async Task<DateTimeOffset?> TryWaitAsync(QmpEventSubscription events, string name, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            return (await events.WaitAsync(name, null, cts.Token)).Timestamp;
        }
        catch (OperationCanceledException)
        {
            return null;
        }
        catch (QmpException)
        {
            return null;
        }
    }
}
