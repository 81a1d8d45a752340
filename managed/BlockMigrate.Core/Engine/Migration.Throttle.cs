using System.Diagnostics;

namespace BlockMigrate.Engine;

public sealed partial class Migration
{
    private ulong _throttle;             // bytes/s of guest writes allowed; 0 = off
    private long _throttleSince;         // Stopwatch timestamp when it was last switched on
    private TimeSpan _throttledTotal;    // wall time spent throttled, closed spans
    private ulong _throttleTightest;     // the lowest cap applied so far (bytes/s); 0 = never throttled
    private ulong _writtenAtRound;       // the maps' bytes_written at the previous adjustment
    private TimeSpan _delayedAtStart;    // the maps' throttled_ns when the migration began

    /// <summary>
    /// Called after a round that did not fit: applies <see cref="ThrottleLaw"/> to the maps. The throttle
    /// is released at the hand-over, on abort, and in RunAsync's finally.
    /// </summary>
    private void AdjustThrottle(double dirtyRate, TimeSpan roundTime)
    {
        ulong written = 0;
        foreach (var d in _disks) written += d.Map.Counters().BytesWritten;
        var writeRate = ThrottleLaw.WriteRate(_writtenAtRound, written, roundTime);
        _writtenAtRound = written;
        if (ThrottleLaw.Next(_throttle, dirtyRate, writeRate, _rates.BlockRate) is not { } next) return;
        SetThrottle(next.Cap);
        Say($"throttle: guest writes capped at {Mib(next.Cap)}/s (dirty rate {Mib(dirtyRate)}/s, drain rate {Mib(_rates.BlockRate)}/s, amplification {next.Amplification:0.0})");
    }

    private void SetThrottle(ulong bytesPerSecond)
    {
        if (_throttle == 0 && bytesPerSecond > 0) _throttleSince = Stopwatch.GetTimestamp();
        if (_throttle > 0 && bytesPerSecond == 0) _throttledTotal += Stopwatch.GetElapsedTime(_throttleSince);
        _throttle = bytesPerSecond;
        if (bytesPerSecond > 0 && (_throttleTightest == 0 || bytesPerSecond < _throttleTightest)) _throttleTightest = bytesPerSecond;
        foreach (var d in _disks) d.Map.SetThrottle(bytesPerSecond);
    }

    private void ReleaseThrottle()
    {
        if (_throttle == 0) return;
        foreach (var d in _disks) TryRun($"disk {d.Name}: releasing the throttle", () => d.Map.SetThrottle(0));
        _throttledTotal += Stopwatch.GetElapsedTime(_throttleSince);
        _throttle = 0;
        Say("throttle: released");
    }

    private TimeSpan ThrottledWallTime => _throttle > 0 ? _throttledTotal + Stopwatch.GetElapsedTime(_throttleSince) : _throttledTotal;

    private TimeSpan WritesDelayed()
    {
        var total = TimeSpan.Zero;
        foreach (var d in _disks) total += d.Map.Counters().Throttled;
        return total - _delayedAtStart;
    }

    /// <summary>
    /// The source VM stopped for the switchover (<see cref="Hypervisors.IHypervisor.SourceStopped"/>, raised on the
    /// hypervisor's event thread): lift the cap on the maps at once. QEMU drains the guest's requests in flight before
    /// it calls the switchover, and a throttled shim would hold that drain — and so the guest's pause — for as long as
    /// the backlog takes at the cap (seconds under a heavy writer). The stopped guest issues no new writes; the drained
    /// ones are recorded in the map and go in the final set. The engine's own bookkeeping (<see cref="ReleaseThrottle"/>)
    /// still runs at the switchover; AdjustThrottle runs only in the pre-copy, which is over by now.
    /// </summary>
    private void LiftThrottleAtStop()
    {
        var lifted = false;
        foreach (var d in _disks)
            TryRun($"disk {d.Name}: lifting the throttle at the source's stop", () =>
            {
                if (d.Map.Counters().ThrottleBytesPerSecond == 0) return;
                d.Map.SetThrottle(0);
                lifted = true;
            });
        if (lifted) Say("throttle: lifted, the source VM stopped (its writes in flight drain at full speed)");
    }
}
