using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using BlockMigrate.Hypervisors.Qemu;

namespace BlockMigrate.Bench.Qemu;

/// <summary>
/// The baseline: QEMU's own storage migration, as libvirt's <c>--copy-storage-all</c> drives it. The
/// destination QEMU exports its (empty) disk over NBD; the source mirrors its disk into that export
/// (<c>blockdev-mirror sync=full</c>), and once the mirror is READY it keeps forwarding writes while the
/// memory migrates; when memory is done (source stopped) the mirror is cancelled without pivot, which
/// completes it with the target in sync; then the destination resumes.
/// On a delayed link the mirror runs with <c>copy-mode=write-blocking</c> (libvirt's
/// <c>--copy-storage-synchronous-writes</c>): in the default background mode it declares READY only at
/// a moment with no dirty chunk and no copy in flight, which a guest writing every ~5 ms never gives
/// it when each copy takes a 50 ms round trip (measured: still not READY after 4 minutes at 100 Mbit/s,
/// 25 ms each way, having copied a 64 MiB disk four times over). Write-blocking sends each guest write
/// to the destination before completing it, so the guest's writes take a round trip each, and the
/// mirror converges.
/// <paramref name="memory"/>: QEMU's defaults, or multifd (one channel) with zstd on both QEMUs, as
/// BlockMigrate's side of the same row sets them (<see cref="MemoryMode"/>), or post-copy
/// (<see cref="FinishPostcopyAsync"/>): the source's <c>completed</c> then comes only after the last page,
/// long after the destination could run, so the switchover pauses before it instead, as libvirt does
/// (<c>pause-before-switchover</c>).
/// </summary>
public sealed class QemuCopyStorageMigration(MemoryMode memory = MemoryMode.Defaults) : IMigrationUnderTest
{
    private const int MemoryPort = 4444;
    private const int NbdPort = 10810;

    public string Name => "qemu-copy-storage@" + memory.Label();
    public MemoryMode Memory => memory;

    /// <summary>
    /// The destination sees the source's NBD client go away a moment after <c>blockdev-del</c>; until then
    /// <c>block-export-del</c> says "still in use". Retry briefly, then cut the connection (mode hard).
    /// </summary>
    private static async Task DeleteExportAsync(QmpClient dst, CancellationToken ct)
    {
        for (var i = 0; i < 100; i++)
        {
            try
            {
                await dst.ExecuteAsync("block-export-del", new JsonObject { ["id"] = "exp0" }, ct);
                return;
            }
            catch (QmpException e) when (e.Description.Contains("still in use"))
            {
                await Task.Delay(10, ct);
            }
        }
        await dst.ExecuteAsync("block-export-del", new JsonObject { ["id"] = "exp0", ["mode"] = "hard" }, ct);
    }

    public async Task<MethodOutcome> RunAsync(
        BenchHosts hosts, CancellationToken ct)
    {
        var connect = TimeSpan.FromSeconds(10);
        await using var src = await QmpClient.ConnectAsync(hosts.Source.QmpSocket, connect, ct);
        await using var dst = await QmpClient.ConnectAsync(hosts.Destination.QmpSocket, connect, ct);
        var dstIp = hosts.Net.DestinationAddress;
        var copyMode = hosts.Settings.Delay > TimeSpan.Zero ? "write-blocking" : "background";
        // both of the source's connections take the delayed path: the memory stream and the mirror's NBD client
        using var memoryPath = await DelayedPath.StartAsync(hosts, MemoryPort);
        using var nbdPath = await DelayedPath.StartAsync(hosts, NbdPort);
        using var srcEvents = src.Subscribe("STOP", "MIGRATION", "BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED");
        using var dstEvents = dst.Subscribe("RESUME");
        using var dstLoaded = dst.Subscribe("MIGRATION");
        var srcCaps = new JsonArray(
            new JsonObject { ["capability"] = "events", ["state"] = true },
            new JsonObject { ["capability"] = "auto-converge", ["state"] = hosts.Settings.AutoConverge },
            new JsonObject { ["capability"] = "multifd", ["state"] = memory == MemoryMode.MultifdZstd });
        var dstCaps = new JsonArray(
            new JsonObject { ["capability"] = "events", ["state"] = true },
            new JsonObject { ["capability"] = "multifd", ["state"] = memory == MemoryMode.MultifdZstd });
        if (memory == MemoryMode.Postcopy)
        {
            // post-copy needs the capability on both sides; the source pauses in pre-switchover (VM stopped,
            // device state not yet sent) until migrate-continue: there the mirror is cancelled
            srcCaps.Add(new JsonObject { ["capability"] = "postcopy-ram", ["state"] = true });
            srcCaps.Add(new JsonObject { ["capability"] = "pause-before-switchover", ["state"] = true });
            dstCaps.Add(new JsonObject { ["capability"] = "postcopy-ram", ["state"] = true });
        }
        await src.ExecuteAsync("migrate-set-capabilities", new JsonObject { ["capabilities"] = srcCaps }, ct);
        await dst.ExecuteAsync("migrate-set-capabilities", new JsonObject { ["capabilities"] = dstCaps }, ct);
        if (memory == MemoryMode.MultifdZstd)
            foreach (var qmp in new[] { src, dst })
                await qmp.ExecuteAsync("migrate-set-parameters", new JsonObject
                {
                    ["multifd-channels"] = 1, ["multifd-compression"] = "zstd",
                }, ct);

        var started = Stopwatch.GetTimestamp();
        await dst.ExecuteAsync("migrate-incoming", new JsonObject { ["uri"] = $"tcp:0.0.0.0:{MemoryPort}" }, ct);
        await dst.ExecuteAsync("nbd-server-start", new JsonObject
        {
            ["addr"] = new JsonObject { ["type"] = "inet", ["data"] = new JsonObject { ["host"] = dstIp, ["port"] = NbdPort.ToString() } },
        }, ct);
        await dst.ExecuteAsync("block-export-add", new JsonObject
        {
            ["type"] = "nbd", ["id"] = "exp0", ["node-name"] = "d0", ["name"] = "d0", ["writable"] = true,
        }, ct);
        await src.ExecuteAsync("blockdev-add", new JsonObject
        {
            ["driver"] = "nbd", ["node-name"] = "mirror-tgt", ["export"] = "d0",
            ["server"] = new JsonObject { ["type"] = "inet", ["host"] = nbdPath.Host, ["port"] = nbdPath.Port.ToString() },
        }, ct);
        await src.ExecuteAsync("blockdev-mirror", new JsonObject
        {
            ["job-id"] = "mig0", ["device"] = "d0", ["target"] = "mirror-tgt", ["sync"] = "full", ["copy-mode"] = copyMode,
        }, ct);
        while (true)
        {
            var e = await srcEvents.Reader.ReadAsync(ct);
            if (e.Name == "BLOCK_JOB_READY")
                break;
            if (e.Name == "BLOCK_JOB_COMPLETED")
                throw new InvalidOperationException("mirror ended before READY: " + (e.DataString("error") ?? "no error given"));
        }
        var mirrorReady = Stopwatch.GetElapsedTime(started);

        await src.ExecuteAsync("migrate", new JsonObject { ["uri"] = $"tcp:{memoryPath.HostPort}" }, ct);
        if (memory == MemoryMode.Postcopy)
            return await FinishPostcopyAsync(src, dst, srcEvents, dstEvents, dstLoaded, started, mirrorReady, copyMode, ct);
        DateTimeOffset? stopped = null;
        while (true)
        {
            var e = await srcEvents.Reader.ReadAsync(ct);
            if (e.Name == "STOP")
                stopped ??= e.Timestamp;
            else if (e.Name == "MIGRATION" && e.DataString("status") is "completed")
                break;
            else if (e.Name == "MIGRATION" && e.DataString("status") is "failed" or "cancelled")
                throw new InvalidOperationException("memory migration " + e.DataString("status"));
        }
        var memoryDone = Stopwatch.GetElapsedTime(started);
        await src.ExecuteAsync("block-job-cancel", new JsonObject { ["device"] = "mig0" }, ct);
        var mirrorDone = (await srcEvents.WaitAsync("BLOCK_JOB_COMPLETED", null, ct)).Timestamp;
        await src.ExecuteAsync("blockdev-del", new JsonObject { ["node-name"] = "mirror-tgt" }, ct);
        await DeleteExportAsync(dst, ct);
        await dst.ExecuteAsync("nbd-server-stop", null, ct);
        var contSent = DateTimeOffset.UtcNow;
        await dst.ExecuteAsync("cont", null, ct); // while the destination still loads, this only sets autostart
        var resumed = (await dstEvents.WaitAsync("RESUME", null, ct)).Timestamp;
        var total = Stopwatch.GetElapsedTime(started);
        var loaded = (await dstLoaded.WaitAsync("MIGRATION", e => e.DataString("status") == "completed", ct)).Timestamp;

        var info = await src.ExecuteObjectAsync("query-migrate", null, ct);
        var qemuDowntime = info["downtime"] is JsonValue d ? TimeSpan.FromMilliseconds((long)d) : (TimeSpan?)null;
        var memoryBytes = (long?)info["ram"]?["transferred"] ?? 0;
        var stop = stopped ?? resumed;
        string After(DateTimeOffset t) => $"{(t - stop).TotalMilliseconds:0}";
        // where the guest downtime went, in ms after the source's STOP
        return new MethodOutcome(total, resumed - stop, qemuDowntime, memoryBytes,
            $"memory {memory.Label()}; mirror ({copyMode}) READY {mirrorReady.TotalSeconds:0.00} s, memory done {memoryDone.TotalSeconds:0.00} s; after STOP: mirror completed {After(mirrorDone)}, destination loaded {After(loaded)}, cont sent {After(contSent)}, RESUME {After(resumed)} ms");
    }

    /// <summary>
    /// The post-copy switchover, fair to QEMU: <c>migrate-start-postcopy</c> once the first pass over memory
    /// is done (query-migrate's <c>dirty-sync-count</c> ≥ 2, the point the mode asks of both methods); the
    /// source stops its VM and, with <c>pause-before-switchover</c>, waits in <c>pre-switchover</c>. There
    /// the READY mirror is cancelled (<c>block-job-cancel</c>, BLOCK_JOB_COMPLETED: the source is stopped,
    /// so the target is a point-in-time copy), the export removed, <c>migrate-continue</c> sends the device
    /// state, and <c>cont</c> at the destination (still incoming: it only sets autostart) makes it run as
    /// soon as the device state is loaded (QEMU's postcopy RUN). The remaining pages follow, on demand
    /// and in the background; the run ends when the source reports <c>completed</c> and the destination
    /// has loaded everything. Total: <c>migrate</c> to both; guest downtime: STOP to RESUME. If pre-copy
    /// converges before the switch (QEMU checks for completion first), the run still pauses before the
    /// switchover and completes in pre-copy; the detail then says so.
    /// </summary>
    private static async Task<MethodOutcome> FinishPostcopyAsync(
        QmpClient src, QmpClient dst, QmpEventSubscription srcEvents, QmpEventSubscription dstEvents,
        QmpEventSubscription dstLoaded, long started, TimeSpan mirrorReady, string copyMode, CancellationToken ct)
    {
        string? askedAt = null;
        while (true)
        {
            var info = await src.ExecuteObjectAsync("query-migrate", null, ct);
            var status = (string?)info["status"];
            if (status is "failed" or "cancelled")
                throw new InvalidOperationException("memory migration " + status + ": " + ((string?)info["error-desc"] ?? "no error given"));
            if (status is not ("setup" or "active"))
                break; // already stopping (pre-copy converged first): no post-copy, the same pause follows
            if (status == "active" && (long?)info["ram"]?["dirty-sync-count"] is >= 2 and var syncs)
            {
                await src.ExecuteAsync("migrate-start-postcopy", null, ct);
                askedAt = string.Format(CultureInfo.InvariantCulture, "{0:0.00} s (dirty sync {1}, {2:0.0} MB left)",
                    Stopwatch.GetElapsedTime(started).TotalSeconds, syncs, ((long?)info["ram"]?["remaining"] ?? 0) / 1e6);
                break;
            }
            await Task.Delay(50, ct);
        }

        DateTimeOffset? stopped = null;
        DateTimeOffset paused;
        while (true)
        {
            var e = await srcEvents.Reader.ReadAsync(ct);
            if (e.Name == "STOP")
                stopped ??= e.Timestamp;
            else if (e.Name == "MIGRATION" && e.DataString("status") is "pre-switchover")
            {
                paused = e.Timestamp;
                break;
            }
            else if (e.Name == "MIGRATION" && e.DataString("status") is "failed" or "cancelled" or "completed")
                throw new InvalidOperationException("memory migration " + e.DataString("status") + " without pausing before the switchover");
        }
        await src.ExecuteAsync("block-job-cancel", new JsonObject { ["device"] = "mig0" }, ct);
        var mirrorEnd = await srcEvents.WaitAsync("BLOCK_JOB_COMPLETED", null, ct);
        if (mirrorEnd.DataString("error") is { } mirrorError)
            throw new InvalidOperationException("mirror failed at the switchover: " + mirrorError);
        await src.ExecuteAsync("blockdev-del", new JsonObject { ["node-name"] = "mirror-tgt" }, ct);
        await DeleteExportAsync(dst, ct);
        await dst.ExecuteAsync("nbd-server-stop", null, ct);
        var continued = DateTimeOffset.UtcNow;
        await src.ExecuteAsync("migrate-continue", new JsonObject { ["state"] = "pre-switchover" }, ct);
        var contSent = DateTimeOffset.UtcNow;
        await dst.ExecuteAsync("cont", null, ct); // the destination is still incoming: this sets autostart
        var resumed = (await dstEvents.WaitAsync("RESUME", null, ct)).Timestamp;
        var postcopyActive = false;
        DateTimeOffset completed;
        while (true)
        {
            var e = await srcEvents.WaitAsync("MIGRATION", null, ct);
            var status = e.DataString("status");
            if (status == "postcopy-active")
                postcopyActive = true;
            else if (status == "completed")
            {
                completed = e.Timestamp;
                break;
            }
            else if (status is "failed" or "cancelled" or "postcopy-paused")
                throw new InvalidOperationException("memory migration " + status + " after the switchover");
        }
        var loaded = (await dstLoaded.WaitAsync("MIGRATION", e => e.DataString("status") == "completed", ct)).Timestamp;
        var total = Stopwatch.GetElapsedTime(started);

        var info2 = await src.ExecuteObjectAsync("query-migrate", null, ct);
        var qemuDowntime = info2["downtime"] is JsonValue d ? TimeSpan.FromMilliseconds((long)d) : (TimeSpan?)null;
        var memoryBytes = (long?)info2["ram"]?["transferred"] ?? 0;
        var requests = (long?)info2["ram"]?["postcopy-requests"];
        var stop = stopped ?? resumed;
        string After(DateTimeOffset t) => $"{(t - stop).TotalMilliseconds:0}";
        return new MethodOutcome(total, resumed - stop, qemuDowntime, memoryBytes,
            $"memory postcopy; mirror ({copyMode}) READY {mirrorReady.TotalSeconds:0.00} s, "
            + (askedAt != null ? $"post-copy asked at {askedAt}" : "pre-copy converged before post-copy was asked")
            + (postcopyActive ? "" : ", never postcopy-active")
            + $"; after STOP: pre-switchover {After(paused)}, mirror completed {After(mirrorEnd.Timestamp)}, continued {After(continued)}, cont sent {After(contSent)}, RESUME {After(resumed)}, source completed {After(completed)}, destination loaded {After(loaded)} ms; {requests} pages requested by the destination");
    }
}
