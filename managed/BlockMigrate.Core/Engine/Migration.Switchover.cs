using System.Diagnostics;
using System.Security.Cryptography;
using BlockMigrate.Hypervisors;
using BlockMigrate.Maps;
using BlockMigrate.Protocol;

namespace BlockMigrate.Engine;

public sealed partial class Migration
{
    private TimeSpan _downtime;
    private long _frozenAtUnixMs;
    private long _finalBlocks;
    private bool? _verified;
    private TimeSpan? _switchoverTime;

    /// <summary>
    /// The switchover, called once by the hypervisor when the source VM has stopped for good:
    /// <code>
    ///   freeze every map (new writes wait; writes in flight drain)        ← downtime starts
    ///   take the final dirty set
    ///   send it as FinalSet frames (the destination gate marks those blocks stale)
    ///   send their data
    ///   send Commit; the receiver writes, fsyncs, records the commit, answers Committed  ← commit point
    /// </code>
    /// After the commit point the destination owns the disks; nothing is given back any more.
    /// With <see cref="MigrationOptions.Verify"/> both sides then hash every image while the source is frozen.
    /// </summary>
    private async Task SwitchoverAsync(CancellationToken ct)
    {
        SetPhase(MigrationPhase.Switchover);
        var started = Stopwatch.GetTimestamp();
        _frozenAtUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        foreach (var d in _disks)
        {
            d.Map.Freeze(_options.FreezeTimeout);
            d.Frozen = true;
        }
        var work = new List<(SourceDisk, ulong[])>();
        long blockBytes = 0;
        foreach (var d in _disks)
        {
            var taken = d.Take(out var n);
            _finalBlocks += (long)n;
            blockBytes += (long)Math.Min(n * d.BlockSize, d.Size);
            work.Add((d, taken));
            var ranges = BlockRange.FromBits(taken);
            var i = 0;
            do
            {
                var part = ranges.Skip(i).Take(FinalSet.MaxRanges).ToList();
                await _sender!.SendControlAsync(FrameType.FinalSet, new FinalSet(d.Index, part).Encode(), ct);
                i += FinalSet.MaxRanges;
            } while (i < ranges.Count);
        }
        await SendBlocksAsync(work, blockBytes, drain: false, ct);
        await _sender!.SendControlAsync(FrameType.Commit, [], ct);
        await _sender.WaitCommittedAsync(ct);
        _downtime = Stopwatch.GetElapsedTime(started);
        _switchoverTime = _downtime;
        _committed = true;
        foreach (var d in _disks)
        {
            d.ForgetOutstanding();
            TryRun(() => d.Map.SetCookie(new byte[DirtyMap.CookieSize]));
            TryRun(() => d.Map.SetState(MapState.None, MapState.Tracking));
        }
        ReleaseThrottle();
        Say($"committed: {_finalBlocks} final blocks, downtime {_downtime.TotalMilliseconds:0} ms");
        Committed?.Invoke();
        if (_options.Verify) await VerifyAsync(ct);
    }

    /// <summary>Both sides hash every image: the source its frozen image, the receiver what it committed.</summary>
    private async Task VerifyAsync(CancellationToken ct)
    {
        SetPhase(MigrationPhase.Verifying);
        List<string> local;
        VerifyResultMessage remote;
        try
        {
            await _sender!.SendControlAsync(FrameType.Verify, [], ct);
            local = await Task.Run(() => _disks.Select(d => HashImage(d)).ToList(), ct);
            remote = await _sender.WaitVerifiedAsync(ct);
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
        if (_hypervisor is NoneHypervisor && !_options.KeepSourceFrozen)
            foreach (var d in _disks)
            {
                TryRun(d.Map.Thaw);
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
        _resumed,
        _frozenAtUnixMs,
        _finalBlocks,
        hv.Hypervisor,
        _disks.Select(d => d.Name).ToList())
    {
        HypervisorDetails = hv.Switchover == null ? hv with { Switchover = _switchoverTime } : hv,
    };
}
