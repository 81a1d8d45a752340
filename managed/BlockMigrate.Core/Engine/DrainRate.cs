namespace BlockMigrate.Engine;

/// <summary>
/// What one round of sending measured (Migration.PreCopy.cs). <paramref name="Tail"/>: from the last frame in
/// the socket to the last ack (the receiver writing and fsyncing what was still in flight, and the ack's way
/// back), <paramref name="TailWireBytes"/>: the bytes in flight then; <paramref name="Take"/>: taking the round's
/// dirty set from the maps (the final take scans the same maps).
/// </summary>
internal readonly record struct RoundStats(TimeSpan Elapsed, long WireBytes, long DataBytes, long BlockBytes, double LinkWaitFraction,
    TimeSpan Tail = default, long TailWireBytes = 0, TimeSpan? Take = null);

/// <summary>
/// What the switchover pays besides the data, measured before it (Migration.PreCopy.cs):
/// <paramref name="AckLatency"/>: a small frame's send → ack on an idle link (a round trip plus the receiver's
/// fsync of nearly nothing); <paramref name="Record"/>: one durable state record at the receiver (write, fsync,
/// rename, directory fsync: two fsyncs, each costed as the ack latency's); <paramref name="Disks"/>: one
/// record each (commit: "committed", gate: "handed over"); <paramref name="Window"/>: the most bytes in flight.
/// </summary>
internal readonly record struct SwitchoverCosts(TimeSpan AckLatency, TimeSpan Record, int Disks, bool Gate, long Window);

/// <summary>The switchover estimate, step by step (each term measured; see <see cref="DrainRate.Switchover"/>).</summary>
internal readonly record struct SwitchoverEstimate(TimeSpan Take, TimeSpan Send, TimeSpan Tail, TimeSpan Records)
{
    public TimeSpan Total => Take + Send + Tail + Records;

    /// <summary>
    /// Whether the rounds may stop: the whole estimate within <paramref name="maxDowntime"/>, or, when the
    /// part no round can shrink (<paramref name="floor"/>: the estimate of an empty final set — the round trip,
    /// the records) takes half the target or more (a long round trip), what rounds can shrink within the
    /// target on top of it. Without that, a link with a 200 ms round trip could never meet a 300 ms target
    /// and the copy would never end (the round-trip rule the engine had before this estimate, kept).
    /// </summary>
    public bool Fits(TimeSpan floor, TimeSpan maxDowntime) =>
        Total <= maxDowntime || (floor >= maxDowntime / 2 && Total - floor <= maxDowntime);

    public override string ToString() =>
        $"{Total.TotalMilliseconds:0} ms (take {Take.TotalMilliseconds:0.0} + data {Send.TotalMilliseconds:0.0} + fsync and ack {Tail.TotalMilliseconds:0.0} + records {Records.TotalMilliseconds:0.0})";
}

/// <summary>
/// The rates convergence is judged by, from the rounds (no clock, no I/O: inputs are the rounds'
/// figures). Written by whoever just finished a round (the main task in the pre-copy, the memory-rounds
/// task, the switchover), read also by the progress timer: plain fields, as a torn read only skews one
/// progress line.
/// </summary>
internal sealed class DrainRate
{
    /// <summary>Bytes/s on the socket, measured over the latest round of at least 256 KiB on the wire.</summary>
    public double WireRate { get; private set; }

    /// <summary>Dirty-block bytes drained per second: the rate that matters for convergence.</summary>
    public double BlockRate { get; private set; }

    /// <summary>Bytes/s on the wire of a large round (≥ 4 MiB, ≥ 1 s) that waited on the link at least half its time: the link's own rate.</summary>
    public double? LinkRate { get; private set; }

    /// <summary>The latest round's take (the final take scans the same maps).</summary>
    public TimeSpan Take { get; private set; }

    /// <summary>The latest round that ended with at least 64 KiB in flight: how long those took to be written, fsynced and acked.</summary>
    public (TimeSpan Tail, long WireBytes)? Drain { get; private set; }

    /// <summary>
    /// The latest round that ended with data in flight, but less than 64 KiB: how long those few blocks took to
    /// be written, fsynced and acked. An fsync with anything to write costs a journal commit however little it
    /// writes, which the per-byte cost of <see cref="Drain"/> does not see: a small final set pays at least this.
    /// </summary>
    public TimeSpan? SmallTail { get; private set; }

    /// <summary>
    /// The latest drained round's time before its tail that its bytes at <see cref="BlockRate"/> do not explain
    /// (reading the blocks through the shim, the pipeline's start): what a small final set pays before its bytes.
    /// </summary>
    public TimeSpan Startup { get; private set; }

    /// <summary>Updates the rates from a round large enough to say something (a small one sets only what is still unknown).</summary>
    public void Observe(RoundStats s)
    {
        if (s.Take is { } take) Take = take;
        if (s.TailWireBytes >= 64 * 1024) Drain = (s.Tail, s.TailWireBytes);
        else if (s.TailWireBytes > 0) SmallTail = s.Tail;
        var seconds = Math.Max(s.Elapsed.TotalSeconds, 1e-4);
        if (s.WireBytes >= 256 * 1024 || WireRate == 0)
            WireRate = s.WireBytes / seconds;
        if (s.WireBytes >= 4 << 20 && seconds >= 1 && s.LinkWaitFraction >= 0.5)
            LinkRate = s.WireBytes / seconds;
        if (s.DataBytes >= 256 * 1024 || BlockRate == 0)
        {
            // dirty blocks are mostly data: drain rate = socket rate / (wire bytes per data byte)
            var ratio = Math.Clamp((double)s.WireBytes / Math.Max(s.DataBytes, 1), 0.05, 1.2);
            BlockRate = s.DataBytes > 0 ? WireRate / ratio : Math.Max(BlockRate, s.BlockBytes / seconds);
        }
        if (s.Tail > TimeSpan.Zero && BlockRate > 0)
        {
            var before = s.Elapsed - s.Tail;
            Startup = TimeSpan.FromSeconds(Math.Clamp(before.TotalSeconds - s.BlockBytes / BlockRate, 0, Math.Max(0, before.TotalSeconds)));
        }
    }

    /// <summary>
    /// How long freeze → hand-over would take with <paramref name="dirtyBytes"/> in the final set, step by step:
    /// <list type="bullet">
    /// <item>take: the final take scans the maps like the latest round's take did;</item>
    /// <item>data (commit mode only; gate mode hands over before the final blocks are sent): dirty bytes / drain rate,
    ///   plus the latest round's <see cref="Startup"/> (what it spent before its bytes could flow);</item>
    /// <item>fsync and ack: the receiver makes the last bytes in flight durable and says so. Measured at the end of
    ///   each round: the bytes still in flight when its last frame went out took Tail to be acked, so each costs
    ///   (Tail − ack latency) / bytes; the final set's wire bytes (at most a window) cost the same, plus one ack
    ///   latency. While no round has measured it: the wire rate's time for those bytes (the round's rate already
    ///   waited for the receiver's fsyncs, acks being sent after them: an upper bound when the link was slower).
    ///   Never less than <see cref="SmallTail"/> (a round's few blocks: an fsync's fixed cost). Gate mode: one ack
    ///   latency (the final-set frames write nothing, so the receiver acks them without an image fsync);</item>
    /// <item>records: one durable state record per disk at the receiver ("committed" or "handed over"), each as long as
    ///   the receiver's own timing of one (its Welcome), else two ack latencies.</item>
    /// </list>
    /// While no rate is known the data term is 0.
    /// </summary>
    public SwitchoverEstimate Switchover(double dirtyBytes, SwitchoverCosts c)
    {
        var records = c.Record * Math.Max(c.Disks, 1);
        // gate mode: the final set's frames write nothing (every round before them was acked, so fsynced): its ack
        // costs no image fsync, one round trip and the records
        if (c.Gate) return new SwitchoverEstimate(Take, TimeSpan.Zero, c.AckLatency, records);
        var send = BlockRate > 0 ? TimeSpan.FromSeconds(dirtyBytes / BlockRate) + (dirtyBytes > 0 ? Startup : TimeSpan.Zero) : TimeSpan.Zero;
        var wireRatio = BlockRate > 0 && WireRate > 0 ? Math.Min(WireRate / BlockRate, 1.2) : 1;
        var inFlight = Math.Min(dirtyBytes * wireRatio, c.Window);
        var tail = c.AckLatency;
        if (Drain is { } d)
            tail += TimeSpan.FromSeconds(Math.Max(0, (d.Tail - c.AckLatency).TotalSeconds) / d.WireBytes * inFlight);
        else if (WireRate > 0)
            tail += TimeSpan.FromSeconds(inFlight / WireRate); // no round ended with data in flight: as fast as acked bytes went, an upper bound
        if (dirtyBytes > 0 && SmallTail is { } few && few > tail) tail = few; // never under what a few blocks cost
        return new SwitchoverEstimate(Take, send, tail, records);
    }
}

/// <summary>
/// The socket's bytes per second for the progress line and the codec choice: sampled at most every
/// 250 ms, smoothed (each sample weighs half). Callers pass the counter and a Stopwatch timestamp;
/// the progress timer is the only caller in practice, the lock keeps a second one safe.
/// </summary>
internal sealed class SmoothedRate(long startTimestamp)
{
    private static readonly TimeSpan MinInterval = TimeSpan.FromSeconds(0.25);
    private readonly object _lock = new();
    private long _at = startTimestamp, _bytes;
    private double _rate;

    public double Sample(long totalBytes, long nowTimestamp)
    {
        lock (_lock)
        {
            var seconds = System.Diagnostics.Stopwatch.GetElapsedTime(_at, nowTimestamp).TotalSeconds;
            if (seconds < MinInterval.TotalSeconds) return _rate;
            var rate = (totalBytes - _bytes) / seconds;
            _rate = _rate == 0 ? rate : 0.5 * _rate + 0.5 * rate;
            (_at, _bytes) = (nowTimestamp, totalBytes);
            return _rate;
        }
    }
}
