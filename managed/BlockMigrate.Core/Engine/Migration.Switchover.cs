using System.Diagnostics;
using System.Security.Cryptography;
using BlockMigrate.Hypervisors;
using BlockMigrate.Maps;
using BlockMigrate.Protocol;
using BlockMigrate.Verify;

namespace BlockMigrate.Engine;

public sealed partial class Migration
{
    private TimeSpan _downtime;
    private TimeSpan? _commitTime;
    private long _frozenAtUnixMs;
    private long _finalBlocks;
    private bool? _verified;
    private TimeSpan? _switchoverTime;
    private (TimeSpan Frozen, TimeSpan Taken, TimeSpan Sent) _steps; // switchover steps, from its start
    private Task? _finalData;        // gate mode: the final blocks still streaming after the hand-over
    private readonly TaskCompletionSource _hypervisorDone = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>
    /// The switchover, called once by the hypervisor when the source VM has stopped for good:
    /// <code>
    ///   freeze every map (new writes wait; writes in flight drain)        ← downtime starts
    ///   take the final dirty set
    ///   send it as FinalSet frames (the destination gate marks those blocks stale)
    ///   gate mode:   wait for their ack; hand over (return: the destination VM may resume) ← downtime ends
    ///                and stream the final blocks (once the hypervisor is done, or after one downtime
    ///                target) while it runs, then Commit
    ///   commit mode: send their data; Commit; the receiver writes, fsyncs, records the commit,
    ///                answers Committed; hand over (return)                ← downtime ends
    /// </code>
    /// The hand-over is the point of no return: from then on the destination owns the VM and the disks,
    /// the source never runs again and nothing is given back. A hand-over whose final blocks do not all
    /// land (the link fails) leaves those blocks held at the destination gate and recorded at the source
    /// (cookie state "handed over" + the outstanding record): re-running the same migrate finishes it
    /// (<see cref="FinishHandOverAsync"/>). With <see cref="MigrationOptions.Verify"/> both sides then
    /// hash every image while the source is frozen (commit mode only: the destination VM must not run yet).
    /// </summary>
    private async Task SwitchoverAsync(CancellationToken ct)
    {
        SetPhase(MigrationPhase.Switchover);
        var started = Stopwatch.GetTimestamp();
        _ = StartDivert("switchover"); // not awaited (Migration.Divert.cs); normally started at the hypervisor's STOP already; then a no-op
        await StopMemoryRoundsAsync(); // the VM is stopped: no new writes; the round under way finishes first
        // the estimate again with what the rounds of the memory phase measured and what is dirty now (the final
        // set but for writes in flight): the one reported beside the measured downtime
        if (_costs is { } costs) _downtimeEstimate = _rates.Switchover(Dirty().Bytes, costs).Total;
        _frozenAtUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        foreach (var d in _disks)
        {
            d.Map.Freeze(_options.FreezeTimeout);
            d.Frozen = true;
        }
        _steps.Frozen = Stopwatch.GetElapsedTime(started);
        var (work, blockBytes, lastFinalSet) = await SendFinalSetAsync(ct);
        _steps.Taken = Stopwatch.GetElapsedTime(started);
        if (_state.Plan == SwitchoverPlan.Gate)
        {
            // acks are cumulative and in order: this one says every final block is held by the gate
            await _sender!.WaitAckedAsync(lastFinalSet, ct);
            await ThrowIfDivertFailedAsync(); // not waiting for it: Migration.Divert.cs says why
            HandOver(started);
            SetPhase(MigrationPhase.FinalBlocks);
            _finalData = Task.Run(async () =>
            {
                // The hypervisor's last stage (QEMU: the remaining memory and the device state) is what
                // the guest waits for; the final blocks would halve its share of the link. So they
                // wait until the hypervisor is done (the VM resumed there), for one downtime target at
                // most; a destination VM that touches a block meanwhile waits for it at the gate.
                await Task.WhenAny(_hypervisorDone.Task, Task.Delay(_options.MaxDowntime));
                await SendFinalDataAsync(work, blockBytes, started, CancellationToken.None);
            }, CancellationToken.None);
            return;
        }
        await SendFinalDataAsync(work, blockBytes, started, ct);
        await ThrowIfDivertFailedAsync();
        HandOver(started);
        if (_options.Verify) await VerifyAsync(ct);
    }

    /// <summary>
    /// A re-run after a hand-over whose final blocks did not all land: the maps are still frozen and hold
    /// the blocks that were out (from the outstanding record, or every block if it was lost); the
    /// receiver writes only those its gate still holds. Then the hypervisor only makes sure the VM goes
    /// on at the destination (the dead run may have died before it did).
    /// </summary>
    private async Task<HypervisorReport> FinishHandOverAsync(CancellationToken ct)
    {
        SetPhase(MigrationPhase.Switchover);
        var started = Stopwatch.GetTimestamp();
        var (work, blockBytes, _) = await SendFinalSetAsync(ct);
        await SendFinalDataAsync(work, blockBytes, started, ct);
        await _hypervisor.ContinueAfterHandOverAsync(ct); // the dead run may have died before the VM went on
        _downtime = TimeSpan.Zero;
        return new HypervisorReport(_hypervisor.Name, Stopwatch.GetElapsedTime(started), null, null, 0);
    }

    private async Task<(List<(SourceDisk, List<BlockRange>)> Work, long BlockBytes, ulong LastFinalSet)> SendFinalSetAsync(CancellationToken ct)
    {
        var work = new List<(SourceDisk, List<BlockRange>)>();
        long blockBytes = 0;
        ulong last = 0;
        foreach (var d in _disks)
        {
            var taken = d.Take(out var n);
            _finalBlocks += (long)n;
            blockBytes += (long)Math.Min(n * d.BlockSize, d.Size);
            work.Add((d, taken));
            var ranges = taken;
            var i = 0;
            do
            {
                var part = ranges.Skip(i).Take(FinalSet.MaxRanges).ToList();
                last = await _sender!.SendControlAsync(FrameType.FinalSet, new FinalSet(d.Index, part).Encode(), ct);
                i += FinalSet.MaxRanges;
            } while (i < ranges.Count);
        }
        return (work, blockBytes, last);
    }

    /// <summary>The final blocks, then Commit; returns at the commit (data written and fsynced at the destination).</summary>
    private async Task SendFinalDataAsync(List<(SourceDisk, List<BlockRange>)> work, long blockBytes, long started, CancellationToken ct)
    {
        await SendBlocksAsync(work, blockBytes, drain: false, ct);
        _steps.Sent = Stopwatch.GetElapsedTime(started);
        await _sender!.SendControlAsync(FrameType.Commit, [], ct);
        await _sender.WaitCommittedAsync(ct);
        _commitTime = Stopwatch.GetElapsedTime(started);
        _timeline?.Mark(TimelineMarks.Commit);
        _state.Commit();
        foreach (var d in _disks)
        {
            d.ForgetOutstanding();
            TryRun($"disk {d.Name}: clearing the map's cookie after the commit", () => d.Map.SetCookie(new byte[DirtyMap.CookieSize]));
            TryRun($"disk {d.Name}: clearing the map's tracking state after the commit", () => d.Map.SetState(MapState.None, MapState.Tracking));
        }
        Say($"committed: {_finalBlocks} final blocks, {_commitTime.Value.TotalMilliseconds:0} ms after the freeze");
        RecordHandOver();
    }

    /// <summary>The point of no return: the destination VM may resume from now on.</summary>
    private void HandOver(long started)
    {
        _downtime = _commitTime ?? Stopwatch.GetElapsedTime(started);
        _switchoverTime = _downtime;
        // the measured steps beside the estimate's (Migration.PreCopy.cs): where a misestimate came from
        Say($"switchover steps: frozen at {_steps.Frozen.TotalMilliseconds:0.0} ms, final set taken and sent at {_steps.Taken.TotalMilliseconds:0.0} ms" +
            (_commitTime != null ? $", final data sent at {_steps.Sent.TotalMilliseconds:0.0} ms, committed (fsync, records, ack) at {_downtime.TotalMilliseconds:0.0} ms" : $", gated and acked at {_downtime.TotalMilliseconds:0.0} ms") +
            (_downtimeEstimate is { } e ? $"; estimated {e.TotalMilliseconds:0} ms" : ""));
        var committed = _state.IsCommitted;
        if (!committed)
            foreach (var d in _disks)
            {
                // a re-run must finish this hand-over, never copy afresh or give the VM back
                d.Cookie = d.Cookie! with { State = CookieState.HandedOver };
                d.Map.SetCookie(d.Cookie.Encode());
                d.SyncOutstanding();
            }
        _state.HandOver();
        _timeline?.Mark(TimelineMarks.HandOver);
        ReleaseThrottle();
        Say(committed
            ? $"handed over at the commit: downtime {_downtime.TotalMilliseconds:0} ms"
            : $"handed over: {_finalBlocks} final blocks held by the destination gate, downtime {_downtime.TotalMilliseconds:0} ms; streaming them while the destination VM resumes");
        HandedOver?.Invoke();
    }

    /// <summary>
    /// After the hypervisor returned (or failed) past the hand-over: wait for the final blocks still
    /// streaming. If they cannot all land, say how to finish: the blocks stay held at the destination
    /// and recorded here.
    /// </summary>
    private async Task AwaitFinalDataAsync()
    {
        _hypervisorDone.TrySetResult();
        if (_finalData == null || _state.IsCommitted) return;
        try
        {
            await _finalData;
        }
        catch (Exception e)
        {
            var left = _disks.Sum(d => (long)d.OutstandingCount());
            foreach (var d in _disks) TryRun($"disk {d.Name}: writing the outstanding record", d.SyncOutstanding);
            throw new AfterHandOverException(
                $"handed over (the destination VM runs there), but {left} blocks of the final set did not land: {e.Message}. " +
                "The destination holds I/O on them; run the same migrate command again to finish", e);
        }
    }

    /// <summary>Both sides digest every image (hole-aware, <see cref="NonzeroDigest"/>): the source its frozen image, the receiver what it committed.</summary>
    private async Task VerifyAsync(CancellationToken ct)
    {
        SetPhase(MigrationPhase.Verifying);
        List<string> local;
        VerifyResultMessage remote;
        try
        {
            // hole-aware digests (time follows the data); an older receiver answers with whole-image hashes
            await _sender!.SendControlAsync(FrameType.Verify, new VerifyRequest(VerifyDigest.Nonzero).Encode(), ct);
            local = await Task.Run(() => _disks.Select(d => NonzeroDigest.Compute(d.Image, (long)d.Size).Hex).ToList(), ct);
            remote = await _sender.WaitVerifiedAsync(ct);
            if (remote.Digest == null) local = await Task.Run(() => _disks.Select(d => HashImage(d)).ToList(), ct);
        }
        catch (Exception e) when (e is BlockMigrateException or IOException)
        {
            Say($"verify: could not compare ({e.Message}); verified stays unknown");
            return;
        }
        _verified = remote.Sha256.Count == local.Count && local.Zip(remote.Sha256).All(p => p.First == p.Second);
        for (var i = 0; i < local.Count; i++)
            Say($"verify {_disks[i].Name}: source {local[i]}, destination {(i < remote.Sha256.Count ? remote.Sha256[i] : "?")}");
        if (_verified != true) Say("verify: MISMATCH between source and destination");
    }

    internal static string HashImage(SourceDisk d)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        for (long pos = 0; pos < (long)d.Size;)
        {
            var n = RandomAccess.Read(d.Image, buffer, pos);
            if (n == 0) break;
            sha.AppendData(buffer, 0, n);
            pos += n;
        }
        return Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant();
    }

    /// <summary>
    /// After the commit: with no hypervisor the source map is thawed (a writer may go on, e.g. the demo's,
    /// now against a shim on the destination) unless asked to keep it frozen; with a real hypervisor the
    /// source VM never runs again and the map stays frozen until the source shim is stopped.
    /// </summary>
    private Task AfterCommitAsync()
    {
        if (_state.Plan == SwitchoverPlan.Finish) return Task.CompletedTask; // a handed-over VM never runs at the source again
        if (_hypervisor is NoneHypervisor && !_options.KeepSourceFrozen)
            foreach (var d in _disks)
            {
                TryRun($"disk {d.Name}: thawing the source map", d.Map.Thaw);
                d.Frozen = false;
            }
        return Task.CompletedTask;
    }

    private MigrationReport BuildReport(HypervisorReport hv) => new(
        _clock.Elapsed.TotalSeconds,
        _downtime.TotalMilliseconds,
        _channel!.Counter.BytesWritten,
        _channel.Counter.BytesWritten - _bulkWireBytes,
        Interlocked.Read(ref _producer!.DataBytes),
        Interlocked.Read(ref _producer.ZeroBytes),
        _bytesToSend,
        _round,
        ThrottledWallTime.TotalSeconds,
        WritesDelayed().TotalSeconds,
        _verified,
        _disks.Any(d => d.Resumed),
        _frozenAtUnixMs,
        _finalBlocks,
        hv.Hypervisor,
        _disks.Select(d => d.Name).ToList())
    {
        HypervisorDetails = hv.Switchover == null ? hv with { Switchover = _switchoverTime } : hv,
        Switchover = _state.Plan == SwitchoverPlan.Gate ? SwitchoverMode.Gate : SwitchoverMode.Commit,
        FinishedHandOver = _state.Plan == SwitchoverPlan.Finish,
        CommitMs = _commitTime?.TotalMilliseconds,
        ThrottleTightestBytesPerSecond = _throttleTightest,
        DowntimeEstimateMs = _downtimeEstimate?.TotalMilliseconds,
        BytesByCodec = _producer.CodecBytes(),
        BlocksFromSeeds = _sender!.SeedBlocks,
        BlocksSent = Interlocked.Read(ref _producer.DataBlocks),
        BlocksDeferred = Interlocked.Read(ref _producer.DeferredBlocks),
        SeedExchangeBytes = _sender.SeedWireBytes,
        ReturnBaseBlocks = (long)ReturnBaseBlocks,
    };
}
