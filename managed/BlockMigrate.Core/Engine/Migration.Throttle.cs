using System.Diagnostics;

namespace BlockMigrate.Engine;

public sealed partial class Migration
{
    private ulong _throttle;             // bytes/s of guest writes allowed; 0 = off
    private long _throttleSince;         // Stopwatch timestamp when it was last switched on
    private TimeSpan _throttledTotal;    // wall time spent throttled, closed spans
    private ulong _writtenAtRound;       // the maps' bytes_written at the previous adjustment
    private TimeSpan _delayedAtStart;    // the maps' throttled_ns when the migration began

    /// <summary>
    /// Called after a round that did not fit. When the guest dirties blocks at ≥ 80% of the drain
    /// rate the copy cannot converge on its own: cap the guest's write bandwidth (the shim's token
    /// bucket) at half the drain rate, divided by the write amplification seen (a 4 KiB write dirties
    /// a whole block), and halve the cap again on every round that still does not fit. The throttle
    /// is released at the commit, on abort, and in RunAsync's finally.
    /// </summary>
    private void AdjustThrottle(double dirtyRate, TimeSpan roundTime)
    {
        ulong written = 0;
        foreach (var d in _disks) written += d.Map.Info().BytesWritten;
        var writeRate = (written - _writtenAtRound) / Math.Max(roundTime.TotalSeconds, 1e-3);
        _writtenAtRound = written;
        if (_throttle == 0 && dirtyRate < 0.8 * _blockRate) return;

        var amplification = writeRate > 0 ? Math.Max(1, dirtyRate / writeRate) : 1;
        var target = _throttle == 0
            ? (ulong)(0.5 * _blockRate / amplification)
            : _throttle / 2;
        target = Math.Max(target, 4096);
        if (target == _throttle) return;
        SetThrottle(target);
        Say($"throttle: guest writes capped at {Mib(target)}/s (dirty rate {Mib(dirtyRate)}/s, drain rate {Mib(_blockRate)}/s, amplification {amplification:0.0})");
    }

    private void SetThrottle(ulong bytesPerSecond)
    {
        if (_throttle == 0 && bytesPerSecond > 0) _throttleSince = Stopwatch.GetTimestamp();
        if (_throttle > 0 && bytesPerSecond == 0) _throttledTotal += Stopwatch.GetElapsedTime(_throttleSince);
        _throttle = bytesPerSecond;
        foreach (var d in _disks) d.Map.SetThrottle(bytesPerSecond);
    }

    private void ReleaseThrottle()
    {
        if (_throttle == 0) return;
        foreach (var d in _disks) TryRun(() => d.Map.SetThrottle(0));
        _throttledTotal += Stopwatch.GetElapsedTime(_throttleSince);
        _throttle = 0;
        Say("throttle: released");
    }

    private TimeSpan ThrottledWallTime => _throttle > 0 ? _throttledTotal + Stopwatch.GetElapsedTime(_throttleSince) : _throttledTotal;

    private TimeSpan WritesDelayed()
    {
        var total = TimeSpan.Zero;
        foreach (var d in _disks) total += d.Map.Info().Throttled;
        return total - _delayedAtStart;
    }
}
