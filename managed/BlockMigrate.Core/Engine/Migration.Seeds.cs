using System.Diagnostics;
using BlockMigrate.Logging;
using BlockMigrate.Maps;

namespace BlockMigrate.Engine;

public sealed partial class Migration
{
    private byte[]? _seedKey; // the receiver's key for this migration's block hashes (its Welcome); null: it has no seeds

    /// <summary>Blocks of one hash-then-send step of the seeded round: 256 MiB at 4 KiB blocks.</summary>
    internal const ulong SeedStepBlocks = 1ul << 16;

    /// <summary>
    /// The first round when the receiver holds seeds (docs/engine.md, "Seeding"). Per disk, in steps of
    /// <see cref="SeedStepBlocks"/> blocks: (1) the step's non-zero whole blocks go as seed-hashes frames
    /// (zeros as zero ranges), and the sender waits for every frame's ack, by which time the receiver has
    /// answered each: the blocks it wrote from its seeds (re-hashed as read) are acknowledged like data;
    /// (2) the others are sent as data. The next step's hashes may then name blocks this step sent.
    /// A step costs one round trip on top of its data. Blocks written again meanwhile are dirty in the map
    /// and go in the next round, as always.
    /// </summary>
    private async Task<RoundStats> SeededRoundAsync(byte[] key, CancellationToken ct)
    {
        var started = Stopwatch.GetTimestamp();
        var linkWait0 = _sender!.LinkWait.Ticks;
        var wire0 = _channel!.Counter.BytesWritten;
        var data0 = Interlocked.Read(ref _producer!.DataBytes);
        var work = new List<(SourceDisk Disk, List<BlockRange> Taken)>();
        long blockBytes = 0;
        foreach (var d in _disks)
        {
            var taken = d.Take(out var n);
            blockBytes += (long)Math.Min(n * d.BlockSize, d.Size);
            work.Add((d, taken));
        }
        var progressStart = data0 + Interlocked.Read(ref _producer.ZeroBytes);
        long hashed = 0, supplied = 0;
        foreach (var (disk, taken) in work)
        {
            foreach (var step in Steps(taken, SeedStepBlocks))
            {
                var batches = new List<SeedBatch>();
                _roundBytesTotal = blockBytes;
                _roundBytesStart = progressStart;
                await PipeAsync((frames, stop) => _producer.ProduceHashesAsync([(disk, step)], key, batches, frames, stop), ct);
                await _sender.DrainAsync(ct); // every hash frame acknowledged, so answered
                var need = new List<BlockRange>();
                foreach (var b in batches)
                {
                    hashed += b.Count;
                    supplied += b.Answer!.SuppliedCount();
                    foreach (var block in b.Answered(supplied: false))
                        if (need.Count > 0 && need[^1].Last + 1 == block) need[^1] = need[^1] with { Last = block };
                        else need.Add(new BlockRange(block, block));
                }
                if (need.Count > 0)
                    await PipeAsync((frames, stop) => _producer.ProduceAsync([(disk, (IEnumerable<BlockRange>)need)], frames, stop), ct);
            }
        }
        await _sender.DrainAsync(ct);
        Say($"seeds: {supplied} of {hashed} blocks hashed were written at the destination from its seeds; {hashed - supplied} sent as data; " +
            $"hash exchange {Mib(_sender.SeedWireBytes)}");
        var elapsedTicks = Math.Max(1, Stopwatch.GetTimestamp() - started);
        var stats = new RoundStats(Stopwatch.GetElapsedTime(started), _channel.Counter.BytesWritten - wire0,
            Interlocked.Read(ref _producer.DataBytes) - data0, blockBytes, (double)(_sender.LinkWait.Ticks - linkWait0) / elapsedTicks);
        _rates.Observe(stats); // its wire rate includes the waits for the receiver's copies: an underestimate, corrected by the dirty rounds
        _log.RoundSent(_round, stats.BlockBytes, stats.DataBytes, stats.WireBytes, stats.Elapsed.TotalMilliseconds,
            100 * stats.LinkWaitFraction, _rates.WireRate, _rates.BlockRate);
        return stats;
    }

    /// <summary>The taken ranges cut at every multiple of <paramref name="stepBlocks"/>, grouped step by step (ascending).</summary>
    internal static IEnumerable<List<BlockRange>> Steps(List<BlockRange> taken, ulong stepBlocks)
    {
        var step = new List<BlockRange>();
        ulong current = 0;
        foreach (var range in taken)
            for (var b = range.First; b <= range.Last;)
            {
                var index = b / stepBlocks;
                var last = Math.Min(range.Last, (index + 1) * stepBlocks - 1);
                if (step.Count > 0 && index != current)
                {
                    yield return step;
                    step = new List<BlockRange>();
                }
                current = index;
                step.Add(new BlockRange(b, last));
                if (last == ulong.MaxValue) break;
                b = last + 1;
            }
        if (step.Count > 0) yield return step;
    }
}
