using System.Diagnostics;
using BlockMigrate.Protocol;

namespace BlockMigrate.Engine;

// The codec policy's inputs and its one output (the producer's codec); the law is Engine/CodecPolicy.cs.
public sealed partial class Migration
{
    private bool _zstdOffered; // from the Welcome (Migration.Connect.cs)
    private CodecPolicy? _codecPolicy; // from InitialCodec on, once the Welcome is in
    private readonly WaitMeter _producerWait = new(); // the sender waiting for the producer's next frame

    /// <summary>Set when the copy starts: the first codec check looks at the copy only, not the handshake.</summary>
    private long _codecCheckedAt { set => _codecPolicy?.Restart(value); }

    private DataEncoding InitialCodec()
    {
        _codecPolicy = new CodecPolicy(_options.Compress, _options.Codec, _options.BandwidthBytesPerSecond,
            BlockCodec.Decodable(_zstdOffered ? [BlockCodec.Zstd.Name] : null), Stopwatch.GetTimestamp());
        var (codec, note) = _codecPolicy.Initial();
        if (note != null) Say(note);
        return codec;
    }

    /// <summary>Auto, from the progress timer: one check of the policy with the sender's waits and the socket's rate.</summary>
    private void AdaptCodec(double socketRate)
    {
        if (_producer is not { } p || _sender is not { } sender || _codecPolicy is not { Adapts: true } policy) return;
        var next = policy.Check(p.Codec, Stopwatch.GetTimestamp(), sender.LinkWait.Ticks, _producerWait.Ticks, socketRate);
        if (next == p.Codec) return;
        p.Codec = next;
        Say($"codec: {BlockCodec.Of(next)?.Name ?? next.ToString().ToLowerInvariant()} (socket {socketRate / 1e6:0.0} MB/s)");
    }
}
