using System.Diagnostics;
using BlockMigrate.Protocol;

namespace BlockMigrate.Engine;

public sealed partial class Migration
{
    // zstd (level 3) compresses OS files to ~36% at ~250 MB/s of input per core here, LZ4 to ~52% at
    // ~650 MB/s (docs/BENCHMARKS.md). Below 40 MB/s on the socket the link is the bottleneck and zstd's
    // third fewer bytes are a third less time; above 60 MB/s zstd's CPU time would start to show.
    private const double ZstdBelow = 40e6, Lz4Above = 60e6;
    private bool _zstdOffered;

    private DataEncoding InitialCodec()
    {
        if (!_options.Compress) return DataEncoding.Raw;
        if (_options.Codec != CodecChoice.Lz4 && !_zstdOffered)
        {
            if (_options.Codec == CodecChoice.Zstd) Say("codec: the receiver does not decode zstd; using LZ4");
            return DataEncoding.Lz4;
        }
        // Auto starts with zstd unless a cap says the link is fast: the socket buffers on the path take
        // the first ~10 MB before a slow link shows as the bottleneck, and those compress better too; a
        // fast link or a busy CPU shows as the sender waiting on the producer within half a second.
        return _options.Codec switch
        {
            CodecChoice.Zstd => DataEncoding.Zstd,
            CodecChoice.Auto when !(_options.BandwidthBytesPerSecond >= Lz4Above) => DataEncoding.Zstd,
            _ => DataEncoding.Lz4,
        };
    }

    private long _codecCheckedAt = Stopwatch.GetTimestamp(), _linkWaitAtCheck, _producerWaitAtCheck;
    private readonly WaitMeter _producerWait = new(); // the sender waiting for the producer's next frame

    /// <summary>
    /// Auto, from the progress timer: zstd while the link is the bottleneck (the sender spent most of the
    /// last interval waiting for window room or the bandwidth cap) and slow; LZ4 when it waited on the
    /// producer instead (CPU-bound: a loaded host, a fast link) or the link is fast. Between rounds
    /// (neither) nothing changes; the gap between the two rate thresholds keeps it from flapping.
    /// </summary>
    private void AdaptCodec(double socketRate)
    {
        if (_producer is not { } p || _sender is not { } sender || _options.Codec != CodecChoice.Auto || !_options.Compress || !_zstdOffered) return;
        var now = Stopwatch.GetTimestamp();
        var (linkWait, producerWait) = (sender.LinkWait.Ticks, _producerWait.Ticks);
        var half = (now - _codecCheckedAt) / 2;
        var linkBound = linkWait - _linkWaitAtCheck > half;
        var producerBound = producerWait - _producerWaitAtCheck > half;
        (_codecCheckedAt, _linkWaitAtCheck, _producerWaitAtCheck) = (now, linkWait, producerWait);
        var next = p.Codec switch
        {
            DataEncoding.Lz4 when linkBound && socketRate is > 0 and <= ZstdBelow => DataEncoding.Zstd,
            DataEncoding.Zstd when producerBound || (linkBound && socketRate >= Lz4Above) => DataEncoding.Lz4,
            var same => same,
        };
        if (next == p.Codec) return;
        p.Codec = next;
        Say($"codec: {next.ToString().ToLowerInvariant()} (socket {socketRate / 1e6:0.0} MB/s)");
    }
}
