using System.Diagnostics;
using BlockMigrate.Hypervisors;
using BlockMigrate.Protocol;
using BlockMigrate.Transport;

namespace BlockMigrate.Engine;

/// <summary>
/// One live migration of a VM's disks to a receiver, from the source side. The phases, one file each:
/// <list type="bullet">
/// <item>Migration.Connect.cs: connect, authenticate, handshake; decide per disk between resume and a fresh copy.</item>
/// <item>Migration.PreCopy.cs: the bulk copy and the dirty rounds, until what is left fits the downtime target.</item>
/// <item>Migration.Throttle.cs: when the guest dirties faster than the link drains, slow its writes until it converges.</item>
/// <item>Migration.Memory.cs: the hypervisor's memory copy, with small dirty rounds going on beside it.</item>
/// <item>Migration.Switchover.cs: the callback the hypervisor calls: freeze, final set, data, commit, (verify).</item>
/// <item>Migration.Abort.cs: before the hand-over every failure leaves the source as it was, bits given back.</item>
/// </list>
/// Usage: <c>await using var m = new Migration(options, hypervisor); m.Progress += ...; var report = await m.RunAsync(ct);</c>
/// </summary>
public sealed partial class Migration : IAsyncDisposable
{
    private readonly MigrationOptions _options;
    private readonly IHypervisor _hypervisor;
    private readonly List<SourceDisk> _disks = [];
    private readonly Stopwatch _clock = new();
    private SecureChannel? _channel;
    private BlockSender? _sender;
    private FrameProducer? _producer;
    private MigrationPhase _phase = MigrationPhase.Connecting;
    private int _round;
    private bool _committed;        // the receiver wrote, fsynced and recorded every final block
    private bool _handedOver;       // the point of no return: the destination VM may run (see Migration.Switchover.cs)
    private bool _gateResume;       // hand over once the final set is gated, not at the commit
    private bool _finishOnly;       // this run finishes an earlier hand-over
    private bool _resumed;
    private long _roundBytesTotal, _roundBytesStart;
    private double _wireRate;       // bytes/s on the socket, measured over the latest large round
    private double _blockRate;      // dirty-block bytes drained per second (the rate that matters for convergence)
    private long _bytesToSend;

    public Migration(MigrationOptions options, IHypervisor hypervisor)
    {
        if (options.Disks.Count == 0) throw new MigrationException("no disks to migrate");
        _options = options;
        _hypervisor = hypervisor;
        _hypervisor.Log += line => Say($"{_hypervisor.Name}: {line}");
    }

    /// <summary>Raised a few times a second and at each phase change (from a worker thread).</summary>
    public event Action<MigrationProgress>? Progress;

    /// <summary>One line per notable event (phase changes, rounds, throttle), for logs.</summary>
    public event Action<string>? Log;

    /// <summary>Raised once, at the hand-over (the point of no return: the destination owns the VM and disks from now on), from the
    /// switchover's thread; e.g. to start network redirection. Must not block.</summary>
    public event Action? HandedOver;

    public MigrationPhase Phase => _phase;

    /// <summary>Runs every phase; returns the report at the end, or throws (source untouched) before the hand-over.</summary>
    public async Task<MigrationReport> RunAsync(CancellationToken cancellationToken)
    {
        _clock.Start();
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (_options.Timeout is { } t) deadline.CancelAfter(t);
        var ct = deadline.Token;
        using var ticker = new Timer(_ =>
        {
            AdaptCodec(LiveRate());
            RaiseProgress();
        }, null, 500, 500);
        try
        {
            OpenDisks();
            await ConnectAsync(ct);
            HypervisorReport hv;
            if (_finishOnly)
                hv = await FinishHandOverAsync(ct);
            else
            {
                await _hypervisor.PrepareAsync(ct);
                await PreCopyAsync(ct);
                hv = await MigrateMemoryAsync(ct);
                if (!_handedOver) throw new MigrationException($"hypervisor {_hypervisor.Name} finished without calling the switchover");
                await AwaitFinalDataAsync();
            }
            await AfterCommitAsync();
            SetPhase(MigrationPhase.Done);
            return BuildReport(hv);
        }
        catch (Exception e) when (!_handedOver)
        {
            var reason = e switch
            {
                OperationCanceledException when cancellationToken.IsCancellationRequested => new MigrationException("migration cancelled; the source is untouched"),
                OperationCanceledException => new MigrationException($"migration timed out after {_options.Timeout?.TotalSeconds:0} s; the source is untouched"),
                BlockMigrateException b => b,
                IOException io => new MigrationException(io.Message, io),
                _ => new MigrationException($"internal error: {e.GetType().Name}: {e.Message}", e),
            };
            await AbortAsync(reason);
            throw reason;
        }
        catch (Exception e) when (e is not AfterHandOverException)
        {
            await AwaitFinalDataAsync(); // the final blocks still land, whatever the hypervisor did
            throw new AfterHandOverException($"handed over (the destination owns the disks), but then: {e.Message}", e);
        }
        finally
        {
            foreach (var d in _disks) TryRun(() => d.Map.SetThrottle(0));
        }
    }

    private void OpenDisks()
    {
        var names = new HashSet<string>();
        foreach (var spec in _options.Disks)
        {
            if (!names.Add(spec.Name)) throw new MigrationException($"disk {spec.Name} named twice");
            _disks.Add(new SourceDisk((ushort)_disks.Count, spec));
        }
        foreach (var d in _disks)
        {
            var info = d.Map.Info();
            _delayedAtStart += info.Throttled;
            _writtenAtRound += info.BytesWritten;
        }
    }

    private void SetPhase(MigrationPhase phase)
    {
        _phase = phase;
        Say($"phase: {phase}");
        RaiseProgress();
    }

    private void Say(string line) => Log?.Invoke(line);

    private void RaiseProgress()
    {
        var handler = Progress;
        if (handler == null) return;
        ulong dirty = 0, dirtyBytes = 0, throttle = 0;
        foreach (var d in _disks)
        {
            try
            {
                var n = d.Map.DirtyCount();
                dirty += n;
                dirtyBytes += n * d.BlockSize;
                throttle = Math.Max(throttle, d.Map.Info().ThrottleBytesPerSecond);
            }
            catch (BlockMigrateException) { }
        }
        var liveRate = LiveRate();
        var done = _producer == null ? 0 : Interlocked.Read(ref _producer.DataBytes) + Interlocked.Read(ref _producer.ZeroBytes) - _roundBytesStart;
        var drain = _blockRate > 0 ? _blockRate : liveRate;
        TimeSpan? eta = drain > 0 && _roundBytesTotal > 0 ? TimeSpan.FromSeconds(Math.Max(0, _roundBytesTotal - done) / drain) : null;
        try
        {
            handler(new MigrationProgress(_phase, _round, done, _roundBytesTotal, liveRate, dirty, dirtyBytes, throttle, eta, _clock.Elapsed));
        }
        catch (Exception e) when (e is IOException or InvalidOperationException) { }
    }

    private long _rateAt = Stopwatch.GetTimestamp(), _rateBytes; // last sample of the socket counter (progress timer only)
    private double _liveRate;
    private readonly object _rateLock = new();

    /// <summary>Socket bytes per second over the last progress interval, smoothed.</summary>
    private double LiveRate()
    {
        if (_channel == null) return 0;
        lock (_rateLock) return SampleRate();
    }

    private double SampleRate()
    {
        var now = Stopwatch.GetTimestamp();
        var seconds = Stopwatch.GetElapsedTime(_rateAt, now).TotalSeconds;
        if (seconds < 0.25) return _liveRate;
        var bytes = _channel!.Counter.BytesWritten;
        var rate = (bytes - _rateBytes) / seconds;
        _liveRate = _liveRate == 0 ? rate : 0.5 * _liveRate + 0.5 * rate;
        (_rateAt, _rateBytes) = (now, bytes);
        return _liveRate;
    }

    private static void TryRun(Action a)
    {
        try
        {
            a();
        }
        catch (BlockMigrateException) { }
    }

    public async ValueTask DisposeAsync()
    {
        if (_sender != null) await _sender.DisposeAsync();
        if (_channel != null) await _channel.DisposeAsync();
        foreach (var d in _disks) d.Dispose();
        await _hypervisor.DisposeAsync();
    }
}
