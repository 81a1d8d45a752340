using System.Diagnostics;

namespace BlockMigrate.Engine;

/// <summary>
/// Time one party spent waiting, readable while a wait is still going on (a socket write or a drain
/// can last seconds on a slow link; a reader that only saw finished waits would see none).
/// One waiter at a time; any thread may read.
/// </summary>
internal sealed class WaitMeter
{
    private long _total;  // Stopwatch ticks of finished waits
    private long _since;  // start of the wait going on, 0 if none

    public void Begin() => Volatile.Write(ref _since, Stopwatch.GetTimestamp());

    public void End()
    {
        var since = Interlocked.Exchange(ref _since, 0);
        if (since != 0) Interlocked.Add(ref _total, Stopwatch.GetTimestamp() - since);
    }

    /// <summary>Stopwatch ticks waited so far, the current wait included.</summary>
    public long Ticks
    {
        get
        {
            var since = Volatile.Read(ref _since);
            return Interlocked.Read(ref _total) + (since != 0 ? Math.Max(0, Stopwatch.GetTimestamp() - since) : 0);
        }
    }
}
