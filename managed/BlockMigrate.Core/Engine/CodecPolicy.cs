using BlockMigrate.Protocol;

namespace BlockMigrate.Engine;

/// <summary>
/// The codec policy: which codec the frame producer uses, from explicit inputs only (the options, the
/// codecs the receiver decodes, the bandwidth cap; then, each check, the time the sender waited on the
/// link and on the producer, and the socket's rate). No clock, no I/O: <c>Migration.Codec.cs</c> feeds it
/// from the progress timer; <c>CodecPolicyTests</c> test the law directly.
/// <para>
/// zstd (level 3) compresses OS files to ~36% at ~250 MB/s of input per core here, LZ4 to ~52% at
/// ~650 MB/s (docs/BENCHMARKS.md). Below 40 MB/s on the socket the link is the bottleneck and zstd's
/// third fewer bytes are a third less time; above 60 MB/s zstd's CPU time would start to show.
/// </para>
/// </summary>
internal sealed class CodecPolicy
{
    /// <summary>Auto moves to zstd only at or below this socket rate (bytes/s) ...</summary>
    public const double ZstdBelow = 40e6;

    /// <summary>... and back to LZ4 at or above this one; the gap keeps it from flapping.</summary>
    public const double Lz4Above = 60e6;

    private readonly bool _compress;
    private readonly CodecChoice _choice;
    private readonly double? _bandwidthCap;
    private readonly bool _zstdDecodable;
    private long _checkedAt, _linkWaitAtCheck, _producerWaitAtCheck;

    /// <param name="compress"><see cref="MigrationOptions.Compress"/>.</param>
    /// <param name="choice"><see cref="MigrationOptions.Codec"/>.</param>
    /// <param name="bandwidthCap"><see cref="MigrationOptions.BandwidthBytesPerSecond"/>.</param>
    /// <param name="decodable">The codecs the receiver decodes (<see cref="BlockCodec.Decodable"/> of its Welcome).</param>
    /// <param name="now">Stopwatch ticks: the start of the first interval.</param>
    public CodecPolicy(bool compress, CodecChoice choice, double? bandwidthCap, IReadOnlyList<BlockCodec> decodable, long now)
    {
        (_compress, _choice, _bandwidthCap, _checkedAt) = (compress, choice, bandwidthCap, now);
        _zstdDecodable = decodable.Contains(BlockCodec.Zstd);
        Decodable = decodable;
    }

    public IReadOnlyList<BlockCodec> Decodable { get; }

    /// <summary>Whether <see cref="Check"/> may change the codec: auto, compressing, and zstd decodable.</summary>
    public bool Adapts => _choice.IsAuto && _compress && _zstdDecodable;

    /// <summary>
    /// The codec to start with (Raw: no compression), and a line for the log when the codec asked for
    /// cannot be used. Auto starts with zstd unless a cap says the link is fast: the socket buffers on the
    /// path take the first ~10 MB before a slow link shows as the bottleneck, and those compress better too;
    /// a fast link or a busy CPU shows as the sender waiting on the producer within half a second.
    /// </summary>
    public (DataEncoding Codec, string? Note) Initial()
    {
        if (!_compress) return (DataEncoding.Raw, null);
        if (_choice.Fixed is { } asked)
            return Decodable.Contains(asked)
                ? (asked.Encoding, null)
                : (BlockCodec.Lz4.Encoding, $"codec: the receiver does not decode {asked.Name}; using {BlockCodec.Lz4.DisplayName}");
        return _zstdDecodable && !(_bandwidthCap >= Lz4Above) ? (DataEncoding.Zstd, null) : (DataEncoding.Lz4, null);
    }

    /// <summary>Starts a new interval at <paramref name="now"/> (the copy begins: the handshake does not count).</summary>
    public void Restart(long now) => _checkedAt = now;

    /// <summary>
    /// One check at <paramref name="now"/> (Stopwatch ticks) with the sender's waits so far (ticks, monotonic):
    /// the interval since the last check is link-bound when the sender waited on the link (window room,
    /// the cap) more than half of it, producer-bound when it waited on the producer more than half of it.
    /// Returns the codec to use from now on (<paramref name="current"/> when nothing changes, and always
    /// when not <see cref="Adapts"/>).
    /// </summary>
    public DataEncoding Check(DataEncoding current, long now, long linkWait, long producerWait, double socketRate)
    {
        if (!Adapts) return current;
        var half = (now - _checkedAt) / 2;
        var linkBound = linkWait - _linkWaitAtCheck > half;
        var producerBound = producerWait - _producerWaitAtCheck > half;
        (_checkedAt, _linkWaitAtCheck, _producerWaitAtCheck) = (now, linkWait, producerWait);
        return Decide(current, linkBound, producerBound, socketRate);
    }

    /// <summary>
    /// The law: zstd while the link is the bottleneck and slow; LZ4 when the sender waited on the producer
    /// instead (CPU-bound: a loaded host, a fast link) or the link is fast. Between rounds (neither bound)
    /// nothing changes.
    /// </summary>
    public static DataEncoding Decide(DataEncoding current, bool linkBound, bool producerBound, double socketRate) => current switch
    {
        DataEncoding.Lz4 when linkBound && socketRate is > 0 and <= ZstdBelow => DataEncoding.Zstd,
        DataEncoding.Zstd when producerBound || (linkBound && socketRate >= Lz4Above) => DataEncoding.Lz4,
        var same => same,
    };
}
