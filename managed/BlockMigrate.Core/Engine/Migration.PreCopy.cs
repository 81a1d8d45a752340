using System.Diagnostics;
using System.Threading.Channels;
using BlockMigrate.Logging;
using BlockMigrate.Maps;

namespace BlockMigrate.Engine;

public sealed partial class Migration
{
    private long _bulkWireBytes; // socket bytes when the bulk copy ended
    private TimeSpan _roundTrip;  // hello → welcome: a round trip plus the receiver's setup (an upper bound)
    private TimeSpan? _downtimeEstimate; // the last round's prediction of the switchover (reported beside the measured one)
    private TimeSpan? _receiverRecord;   // what a durable state record took at the receiver (its Welcome), if it said
    private SwitchoverCosts? _costs;     // what the switchover pays besides the data, set when the dirty rounds start


    /// <summary>
    /// The bulk copy is simply the first round over a map whose bits were all set (or, on resume, over
    /// whatever bits the map kept). Then dirty rounds: take, send, measure. What is left fits when
    /// dirty bytes / drain rate ≤ the downtime target, the drain rate being the socket rate divided by
    /// the compression ratio of recent data, plus one round trip for the final set and the commit.
    /// Past the round limit the copy did not converge.
    /// </summary>
    private async Task PreCopyAsync(CancellationToken ct)
    {
        SetPhase(MigrationPhase.BulkCopy);
        var stats = _seedKey != null ? await SeededRoundAsync(_seedKey, ct) : await TakeAndSendAsync(ct);
        _bytesToSend = stats.BlockBytes;
        _bulkWireBytes = _channel!.Counter.BytesWritten;
        Say($"bulk copy: {Mib(stats.BlockBytes)} of blocks ({Mib(stats.DataBytes)} data) as {Mib(stats.WireBytes)} on the wire in {stats.Elapsed.TotalSeconds:0.00} s");
        SetPhase(MigrationPhase.DirtyRounds);
        // the switchover costs a round trip on top of the data (final set out, Committed back), and a durable
        // record per disk at the receiver (its file's fsync, its directory's fsync): as long as the one it timed
        // while opening the disks (its Welcome says), else costed like two fsyncs an ack waits for
        var roundTrip = _sender!.MinAckLatency is { } ack && ack < _roundTrip ? ack : _roundTrip;
        var record = _receiverRecord ?? 2 * roundTrip;
        var costs = new SwitchoverCosts(roundTrip, record, _disks.Count, _state.Plan == SwitchoverPlan.Gate, _options.WindowBytes);
        _costs = costs;
        Say($"round trip to the receiver: {roundTrip.TotalMilliseconds:0.0} ms; a state record there: {record.TotalMilliseconds:0.0} ms" +
            (_receiverRecord != null ? " (timed there)" : " (not timed there: two round trips assumed)"));
        // When to stop the rounds is judged as in commit mode in both modes: in gate mode the final blocks' data
        // does not delay the hand-over, but the resumed guest waits at the gate for any of them it touches, and
        // the throttle (which only the rounds here adjust) must have tamed a hot writer before the memory phase.
        var judged = costs with { Gate = false };
        var floor = _rates.Switchover(0, judged).Total; // what no round can shrink: the round trip, the records
        if (floor >= _options.MaxDowntime / 2)
            Warn($"the round trip to the receiver ({roundTrip.TotalMilliseconds:0} ms) and its records ({floor.TotalMilliseconds:0} ms in all) leave little of the {_options.MaxDowntime.TotalMilliseconds:0} ms downtime target: the rounds stop when the rest fits in it");
        while (true)
        {
            var (dirtyBlocks, dirtyBytes) = Dirty();
            var dirtyRate = dirtyBytes / Math.Max(stats.Elapsed.TotalSeconds, 1e-3);
            var estimate = _rates.Switchover(dirtyBytes, costs);
            _downtimeEstimate = estimate.Total;
            Say($"round {_round}: {dirtyBlocks} blocks dirty ({Mib(dirtyBytes)}), dirty rate {Mib(dirtyRate)}/s, drain rate {Mib(_rates.BlockRate)}/s, switchover would take {estimate}");
            floor = _rates.Switchover(0, judged).Total;
            if (dirtyBlocks == 0 || _rates.Switchover(dirtyBytes, judged).Fits(floor, _options.MaxDowntime)) return;
            if (_round >= _options.MaxRounds)
                throw new DidNotConvergeException(
                    $"did not converge in {_options.MaxRounds} rounds: {Mib(dirtyBytes)} still dirty, dirtied at {Mib(dirtyRate)}/s against {Mib(_rates.BlockRate)}/s drained" +
                    (_options.Throttle ? "; raise --max-downtime or --max-rounds" : "; allow throttling (drop --no-throttle) or raise --max-downtime"));
            if (_options.Throttle) AdjustThrottle(dirtyRate, stats.Elapsed);
            _round++;
            stats = await TakeAndSendAsync(ct);
        }
    }

    private (ulong Blocks, double Bytes) Dirty()
    {
        ulong blocks = 0;
        double bytes = 0;
        foreach (var d in _disks)
        {
            var n = d.Map.DirtyCount();
            blocks += n;
            bytes += (double)n * d.BlockSize;
        }
        return (blocks, bytes);
    }

    private async Task<RoundStats> TakeAndSendAsync(CancellationToken ct)
    {
        var work = new List<(SourceDisk, List<BlockRange>)>();
        long blockBytes = 0;
        ulong blocks = 0;
        var takeStarted = Stopwatch.GetTimestamp();
        foreach (var d in _disks)
        {
            var taken = d.Take(out var n);
            blocks += n;
            blockBytes += (long)Math.Min(n * d.BlockSize, d.Size);
            work.Add((d, taken));
        }
        var take = Stopwatch.GetElapsedTime(takeStarted);
        _timeline?.Round(_round, blocks, blockBytes);
        var stats = await SendBlocksAsync(work, blockBytes, drain: true, ct, deferDirtyAgain: true) with { Take = take };
        // the bulk copy's tail says nothing of the final set's fsync: it ends on hole punches and its wire
        // bytes are compressed many times over; the dirty rounds, data like the final set's, measure it
        if (_round == 0) stats = stats with { TailWireBytes = 0 };
        _rates.Observe(stats);
        _log.RoundSent(_round, stats.BlockBytes, stats.DataBytes, stats.WireBytes, stats.Elapsed.TotalMilliseconds,
            100 * stats.LinkWaitFraction, _rates.WireRate, _rates.BlockRate);
        return stats;
    }

    /// <summary>Runs the pipeline over taken bits: producer (read, classify, compress) → sender (window, cap, socket).</summary>
    /// <remarks><paramref name="deferDirtyAgain"/>: see <see cref="FrameProducer.ProduceAsync(IEnumerable{ValueTuple{SourceDisk, IEnumerable{BlockRange}}}, System.Threading.Channels.ChannelWriter{OutgoingFrame}, CancellationToken, bool)"/>;
    /// the round's block bytes then count only what was not deferred (the drain rate is of blocks sent).</remarks>
    private async Task<RoundStats> SendBlocksAsync(List<(SourceDisk, List<BlockRange>)> work, long blockBytes, bool drain, CancellationToken ct,
        bool deferDirtyAgain = false)
    {
        var started = Stopwatch.GetTimestamp();
        var linkWait0 = _sender!.LinkWait.Ticks;
        var wire0 = _channel!.Counter.BytesWritten;
        var data0 = Interlocked.Read(ref _producer!.DataBytes);
        var deferred0 = Interlocked.Read(ref _producer.DeferredBytes);
        _roundBytesTotal = blockBytes;
        _roundBytesStart = data0 + Interlocked.Read(ref _producer.ZeroBytes);
        await PipeAsync((frames, stop) => _producer.ProduceAsync(work, frames, stop, deferDirtyAgain), ct);
        // the tail: what was still in flight after the last frame, written, fsynced and acked (the switchover estimate's fsync term)
        var (tailStart, tailBytes) = (Stopwatch.GetTimestamp(), _sender!.InflightBytes);
        if (drain) await _sender.DrainAsync(ct);
        var tail = drain ? Stopwatch.GetElapsedTime(tailStart) : TimeSpan.Zero;
        var elapsedTicks = Math.Max(1, Stopwatch.GetTimestamp() - started);
        var sentBlockBytes = blockBytes - (Interlocked.Read(ref _producer.DeferredBytes) - deferred0);
        return new RoundStats(Stopwatch.GetElapsedTime(started), _channel.Counter.BytesWritten - wire0,
            Interlocked.Read(ref _producer.DataBytes) - data0, sentBlockBytes, (double)(_sender.LinkWait.Ticks - linkWait0) / elapsedTicks,
            tail, drain ? tailBytes : 0);
    }

    /// <summary>The pipeline: <paramref name="produceInto"/> (read, classify, compress) → sender (window, cap, socket); returns once every frame is sent.</summary>
    private async Task PipeAsync(Func<ChannelWriter<OutgoingFrame>, CancellationToken, Task> produceInto, CancellationToken ct)
    {
        // 4 frames (≤ 4 MiB) ahead of the socket: enough to keep it busy, few enough that a codec change soon shows
        var frames = Channel.CreateBounded<OutgoingFrame>(new BoundedChannelOptions(4) { SingleReader = true, SingleWriter = true });
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var produce = Task.Run(async () =>
        {
            try
            {
                await produceInto(frames.Writer, stop.Token);
                frames.Writer.TryComplete();
            }
            catch (Exception e)
            {
                frames.Writer.TryComplete(e);
            }
        }, CancellationToken.None);
        try
        {
            while (true)
            {
                _producerWait.Begin(); // the producer (CPU, disk) is the bottleneck while the sender waits for it
                var more = await frames.Reader.WaitToReadAsync(stop.Token);
                _producerWait.End();
                if (!more) break;
                while (frames.Reader.TryRead(out var frame))
                    await _sender!.SendAsync(frame, stop.Token);
            }
            await produce;
        }
        catch
        {
            await stop.CancelAsync();
            await produce;
            while (frames.Reader.TryRead(out var f))
                if (f.Rented != null) System.Buffers.ArrayPool<byte>.Shared.Return(f.Rented);
            throw;
        }
    }

    private static string Mib(double bytes) => $"{bytes / (1 << 20):0.0} MiB";
}
