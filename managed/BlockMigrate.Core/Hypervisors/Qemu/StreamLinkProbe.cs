namespace BlockMigrate.Hypervisors.Qemu;

/// <summary>
/// The link's rate, read off the memory stream, for a migration whose disk copy could not measure it
/// (a disk of zeros and holes, a return trip, seeds: no round of 4 MiB that waited on the link). Unpaced,
/// QEMU writes as fast as it can; while the link is what holds it back, its send queues stay full, and
/// then the bytes acknowledged per second, plus what the engine's disk rounds sent over the same time,
/// are the link's rate. A reading whose queues are short (QEMU itself was the bottleneck: a fast link, a
/// busy CPU) restarts the run; the first <see cref="Settle"/> of a run is left out, because the bytes
/// acknowledged then also fill the queues of whatever sits on the path (a relay's, a router's), faster
/// than the link carries them. No clock, no I/O: readings in, a rate out, once.
/// </summary>
internal sealed class StreamLinkProbe
{
    /// <summary>Send queues at least this long count as "held back by the link".</summary>
    internal const long MinQueued = 64 << 10;

    /// <summary>The start of a run of full queues that is left out.</summary>
    internal static readonly TimeSpan Settle = TimeSpan.FromMilliseconds(250);

    /// <summary>
    /// The time the rate is measured over, after <see cref="Settle"/>. Short, because until the rate is known
    /// the copy is unpaced and leaves nothing of the link to anyone else: in the web experiment
    /// (docs/BENCHMARKS.md) a client's SYN-ACK lost in the full queue of the 100 Mbit/s link cost it a 1 s
    /// retransmission.
    /// </summary>
    internal static readonly TimeSpan Span = TimeSpan.FromMilliseconds(750);

    private readonly List<(long Bytes, TimeSpan At)> _run = new();

    /// <summary>The rate once measured (then every later reading is ignored).</summary>
    public double? Rate { get; private set; }

    /// <summary>
    /// One reading: <paramref name="acked"/> bytes of the memory stream acknowledged so far, <paramref name="queued"/>
    /// waiting in its send queues now, <paramref name="other"/> bytes the engine has written to the same link so
    /// far, at <paramref name="at"/> (any monotonic origin). Returns the link's rate in bytes/s the first time
    /// a run of full queues spans <see cref="Settle"/> + <see cref="Span"/>, else null.
    /// </summary>
    public double? Add(long acked, long queued, long other, TimeSpan at)
    {
        if (Rate != null) return null;
        if (queued < MinQueued)
        {
            _run.Clear();
            return null;
        }
        if (_run.Count > 0 && at <= _run[^1].At) return null; // out of order: ignored
        _run.Add((acked + other, at));
        var start = _run[0].At + Settle;
        var from = _run.FindIndex(s => s.At >= start);
        if (from < 0 || at - _run[from].At < Span) return null;
        var (bytes, t0) = _run[from];
        var rate = (acked + other - bytes) / (at - t0).TotalSeconds;
        if (rate <= 0) return null;
        Rate = rate;
        return rate;
    }
}
