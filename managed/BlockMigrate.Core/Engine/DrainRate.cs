namespace BlockMigrate.Engine;

/// <summary>What one round of sending measured (Migration.PreCopy.cs).</summary>
internal readonly record struct RoundStats(TimeSpan Elapsed, long WireBytes, long DataBytes, long BlockBytes, double LinkWaitFraction);

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

    /// <summary>Updates the rates from a round large enough to say something (a small one sets only what is still unknown).</summary>
    public void Observe(RoundStats s)
    {
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
    }

    /// <summary>How long the switchover would take for <paramref name="dirtyBytes"/>: their drain time (0 while no rate is known) plus <paramref name="fixedCost"/>.</summary>
    public TimeSpan SwitchoverEstimate(double dirtyBytes, TimeSpan fixedCost) =>
        (BlockRate > 0 ? TimeSpan.FromSeconds(dirtyBytes / BlockRate) : TimeSpan.Zero) + fixedCost;
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
