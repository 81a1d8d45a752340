using System.Diagnostics;

namespace BlockMigrate.Engine;

/// <summary>
/// Records a <see cref="Timeline"/> while a migration runs. Its inputs are explicit: the engine's socket
/// byte counter, the hypervisor's memory byte counter (null where there is none), and the throttle on
/// the guest's writes, read every <see cref="Every"/> by its own task once <see cref="Start"/>ed; the
/// engine tells it phases, rounds and marks as they happen. Rates are the counters' change over the last
/// <see cref="Window"/> of samples (a frame of the disk copy is up to 1 MiB, more than a 100 ms tick
/// carries on a slow link), centred on the sample. Thread-safe: every method may be called from any thread.
/// </summary>
public sealed class TimelineSampler : IAsyncDisposable
{
    public static readonly TimeSpan Every = TimeSpan.FromMilliseconds(100);
    public static readonly TimeSpan Window = TimeSpan.FromMilliseconds(500);
    /// <summary>A memory reading that takes longer (a busy monitor, a virsh call) leaves a gap in the memory series, not a late sample.</summary>
    public static readonly TimeSpan MemoryReadWait = TimeSpan.FromMilliseconds(40);

    private readonly Func<long> _wireBytes;
    private readonly Func<CancellationToken, Task<long?>> _memoryBytes;
    private readonly Func<ulong> _throttle;
    private readonly long _started = Stopwatch.GetTimestamp();
    private readonly DateTimeOffset _startWall = DateTimeOffset.UtcNow;
    private readonly object _lock = new();
    private readonly List<(double T, long Wire, long? Memory, ulong Throttle, MigrationPhase Phase)> _raw = [];
    private readonly List<TimelineRound> _rounds = [];
    private readonly List<TimelinePhase> _phases = [];
    private readonly List<TimelineMark> _marks = [];
    private MigrationPhase _phase = MigrationPhase.Connecting;
    private readonly CancellationTokenSource _stop = new();
    private Task? _loop;

    /// <param name="wireBytes">Bytes the engine has put on its socket so far.</param>
    /// <param name="memoryBytes">Memory bytes the hypervisor has sent so far, or null (not started, or it cannot say).</param>
    /// <param name="throttle">The cap on the guest's writes now, bytes per second (0: none).</param>
    public TimelineSampler(Func<long> wireBytes, Func<CancellationToken, Task<long?>> memoryBytes, Func<ulong> throttle)
    {
        _wireBytes = wireBytes;
        _memoryBytes = memoryBytes;
        _throttle = throttle;
    }

    /// <summary>Time since this sampler was made (the timeline's zero).</summary>
    public TimeSpan Elapsed => Stopwatch.GetElapsedTime(_started);

    /// <summary>Starts sampling every <see cref="Every"/> until <see cref="StopAsync"/>.</summary>
    public void Start() => _loop ??= Task.Run(LoopAsync);

    private async Task LoopAsync()
    {
        using var timer = new PeriodicTimer(Every);
        Task<long?>? pending = null;
        try
        {
            while (await timer.WaitForNextTickAsync(_stop.Token))
            {
                // the reading started at this tick (or one still under way) if it answers within a little while;
                // else this sample has no memory figure and the reading goes on (a busy monitor delays no sample)
                pending ??= ReadMemoryAsync();
                long? memory = null;
                if (await Task.WhenAny(pending, Task.Delay(MemoryReadWait, _stop.Token)) == pending)
                {
                    memory = await pending;
                    pending = null;
                }
                Sample(Elapsed, _wireBytes(), memory, _throttle());
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
    }

    private async Task<long?> ReadMemoryAsync()
    {
        try
        {
            return await _memoryBytes(_stop.Token);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return null; // a gap in the memory series; the migration itself reports the hypervisor's failures
        }
    }

    /// <summary>One sample: the counters as read at <paramref name="at"/> (the loop's; tests call it directly).</summary>
    public void Sample(TimeSpan at, long wireBytes, long? memoryBytes, ulong throttle)
    {
        lock (_lock) _raw.Add((at.TotalSeconds, wireBytes, memoryBytes, throttle, _phase));
    }

    public void Phase(MigrationPhase phase) => Phase(phase, Elapsed);

    public void Phase(MigrationPhase phase, TimeSpan at)
    {
        lock (_lock)
        {
            _phase = phase;
            _phases.Add(new TimelinePhase(phase, at.TotalSeconds));
        }
    }

    /// <summary>A round of the disk copy begins, taking <paramref name="dirtyBlocks"/> blocks.</summary>
    public void Round(int round, ulong dirtyBlocks, long dirtyBytes) => Round(round, dirtyBlocks, dirtyBytes, Elapsed);

    public void Round(int round, ulong dirtyBlocks, long dirtyBytes, TimeSpan at)
    {
        lock (_lock) _rounds.Add(new TimelineRound(round, at.TotalSeconds, dirtyBlocks, dirtyBytes));
    }

    /// <summary>A mark (<see cref="TimelineMarks"/>) now.</summary>
    public void Mark(string name) => Mark(name, Elapsed);

    public void Mark(string name, TimeSpan at)
    {
        lock (_lock) _marks.Add(new TimelineMark(name, at.TotalSeconds));
    }

    /// <summary>A mark at a wall-clock time another process reported (QEMU's event times).</summary>
    public void Mark(string name, DateTimeOffset at) => Mark(name, at - _startWall);

    /// <summary>Stops sampling (one last sample) and returns the timeline. Without a STOP mark of the hypervisor's,
    /// STOP is when the switchover began (the hypervisor calls it once the source VM has stopped).</summary>
    public async Task<Timeline> StopAsync()
    {
        await StopLoopAsync();
        if (_loop != null) Sample(Elapsed, _wireBytes(), null, _throttle());
        return Build();
    }

    /// <summary>The timeline of what was recorded (for tests that feed samples by hand).</summary>
    public Timeline Build()
    {
        lock (_lock)
        {
            var marks = new List<TimelineMark>(_marks);
            if (marks.All(m => m.Name != TimelineMarks.Stop) && _phases.FirstOrDefault(p => p.Phase == MigrationPhase.Switchover) is { T: var t } sw
                && sw.Phase == MigrationPhase.Switchover)
                marks.Add(new TimelineMark(TimelineMarks.Stop, t));
            marks.Sort((a, b) => a.T.CompareTo(b.T));
            return new Timeline(_startWall, Rates(), [.. _rounds], [.. _phases], marks);
        }
    }

    /// <summary>
    /// Each sample's rates over the half <see cref="Window"/> either side of it (centred, so that a rate is drawn
    /// where it happened). The memory counter between two readings is taken as growing evenly (a monitor too busy
    /// to answer, as QEMU's is while it sends the last of the memory with the VM stopped, leaves a gap that gets
    /// the average rate across it, not zero); before the first reading it was 0 (the copy had not started) from the
    /// sample before; after the last reading it is unknown (null).
    /// </summary>
    private List<TimelineSample> Rates()
    {
        var samples = new List<TimelineSample>(_raw.Count);
        var half = Window.TotalSeconds / 2 + 1e-6;
        var readings = new List<(double T, long M)>();
        for (var i = 0; i < _raw.Count; i++)
            if (_raw[i].Memory is { } m)
            {
                if (readings.Count == 0 && i > 0) readings.Add((_raw[i - 1].T, 0));
                readings.Add((_raw[i].T, m));
            }
        int lo = 0, hi = 0;
        for (var i = 0; i < _raw.Count; i++)
        {
            var s = _raw[i];
            while (lo < i && s.T - _raw[lo].T > half) lo++;
            if (hi < i) hi = i;
            while (hi + 1 < _raw.Count && _raw[hi + 1].T - s.T <= half) hi++;
            var (a, b) = (_raw[lo], _raw[hi]);
            var dt = b.T - a.T;
            var disk = dt > 0 ? Math.Max(0, b.Wire - a.Wire) / dt : 0;
            double? memory = null;
            if (readings.Count > 0 && s.T >= readings[0].T && s.T <= readings[^1].T)
            {
                var from = Math.Max(s.T - half, readings[0].T);
                var to = Math.Min(s.T + half, readings[^1].T);
                memory = to > from ? Math.Max(0, Counter(readings, to) - Counter(readings, from)) / (to - from) : 0;
            }
            samples.Add(new TimelineSample(s.T, disk, memory, s.Throttle, s.Phase));
        }
        return samples;
    }

    /// <summary>The counter at <paramref name="t"/>, linear between the readings around it (<paramref name="t"/> within them).</summary>
    private static double Counter(List<(double T, long M)> readings, double t)
    {
        var k = readings.FindIndex(r => r.T >= t);
        if (k <= 0) return readings[Math.Max(k, 0)].M;
        var (p, n) = (readings[k - 1], readings[k]);
        return n.T > p.T ? p.M + (n.M - p.M) * (t - p.T) / (n.T - p.T) : n.M;
    }

    private async Task StopLoopAsync()
    {
        if (!_stop.IsCancellationRequested) await _stop.CancelAsync();
        if (_loop != null) await _loop;
    }

    public async ValueTask DisposeAsync()
    {
        await StopLoopAsync();
        _stop.Dispose();
    }
}
