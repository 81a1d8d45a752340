using System.Diagnostics;
using BlockMigrate.Hypervisors;
using BlockMigrate.Logging;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
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
/// The state (phase, custody of the VM, switchover plan) and its legal transitions: MigrationState.cs.
/// The rules with no I/O, unit-tested alone: DrainRate.cs (rates, switchover estimate), ThrottleLaw.cs.
/// Logging: <c>_log</c> (an <see cref="ILogger"/>, <see cref="CoreLog"/>): Say (information), Warn, and a debug line per round
/// and per failure deliberately ignored (TryRun).
/// Usage: <c>await using var m = new Migration(options, hypervisor, logger); m.Progress += ...; var report = await m.RunAsync(ct);</c>
/// <para>Who touches what. Four flows run: the <b>main</b> task (RunAsync: connect, pre-copy, awaiting the
/// hypervisor, report), the <b>timer</b> (every 500 ms: progress, codec), the <b>memory-rounds</b> task
/// (Memory phase only, stopped and awaited by the switchover before it freezes), the hypervisor's
/// <b>switchover</b> callback, and in gate mode the <b>final-data</b> task it starts.</para>
/// <list type="table">
/// <item><term>_state</term><description>all; its own lock</description></item>
/// <item><term>_channel, _session, _sender, _producer</term><description>set once by main while connecting; read by all after</description></item>
/// <item><term>_round, _roundBytesTotal/Start, _rates</term><description>whoever sends a round (main; then memory-rounds; then switchover or final-data, one at a time, each handing over through an await); the timer reads them unlocked (a stale value skews one progress line)</description></item>
/// <item><term>_throttle*, _writtenAtRound</term><description>main (pre-copy); released by switchover at the hand-over, or by main on abort</description></item>
/// <item><term>_stopMemoryRounds (volatile), _memoryRoundsFailure</term><description>set by switchover/main, resp. memory-rounds; read after awaiting the task</description></item>
/// <item><term>_downtime, _frozenAtUnixMs, _finalBlocks, _switchoverTime, _verified, _finalData</term><description>switchover (or main when finishing); main reads them after the hypervisor returned</description></item>
/// <item><term>_commitTime</term><description>whoever commits (switchover, final-data, or main when finishing); main reads it after AwaitFinalDataAsync</description></item>
/// <item><term>_socketRate, _codecCheckedAt, _linkWaitAtCheck, _producerWaitAtCheck</term><description>timer only</description></item>
/// <item><term>_zstdOffered, _roundTrip, _openingStage, _bytesToSend, _bulkWireBytes, _delayedAtStart</term><description>main only</description></item>
/// </list>
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
    private readonly MigrationState _state = new(); // phase, custody, plan: every transition in MigrationState.cs
    private readonly DrainRate _rates = new();
    private readonly SmoothedRate _socketRate = new(Stopwatch.GetTimestamp());
    private int _round;
    private long _roundBytesTotal, _roundBytesStart;
    private long _bytesToSend;

    private readonly ILogger _log;
    private readonly TimelineSampler? _timeline; // MigrationOptions.RecordTimeline: Timeline*.cs

    /// <param name="logger">Where the migration's lines go (phase changes, rounds, throttle; warnings; debug figures); none: nowhere.</param>
    public Migration(MigrationOptions options, IHypervisor hypervisor, ILogger? logger = null)
    {
        if (options.Disks.Count == 0) throw new MigrationException("no disks to migrate");
        _options = options;
        if (!options.Plaintext) Transport.SecureChannel.WarmUpTrustStore(); // off the handshake's path (~100 ms)
        _hypervisor = hypervisor;
        _log = logger ?? NullLogger.Instance;
        _hypervisor.Log += (level, line) => _log.HypervisorLine(level, _hypervisor.Name, line);
        _hypervisor.SourceStopped += DivertAtStop; // first: the network's divert is what clients wait for
        _hypervisor.SourceStopped += LiftThrottleAtStop;
        if (options.RecordTimeline)
            _timeline = new TimelineSampler(() => _channel?.Counter.BytesWritten ?? 0, hypervisor.MemoryBytesSentAsync, () => _throttle);
    }

    /// <summary>Raised a few times a second and at each phase change (from a worker thread).</summary>
    public event Action<MigrationProgress>? Progress;

    /// <summary>Raised once, at the hand-over (the point of no return: the destination owns the VM and disks from now on), from the
    /// switchover's thread; e.g. to start network redirection. Must not block.</summary>
    public event Action? HandedOver;

    /// <summary>Called once when the source VM stops for the switchover, e.g. to send the VM's traffic to the
    /// destination now: at the hypervisor's <see cref="IHypervisor.SourceStopped"/> (QEMU: its STOP event, before
    /// QEMU drains the disks and calls the switchover), or, for an adapter that does not raise it, as the
    /// switchover starts. It runs alongside the switchover; the hand-over does not wait for it (only a task
    /// already failed by then fails the migration before the hand-over), but the migration does before it
    /// reports (a failure after the hand-over is an <see cref="AfterHandOverException"/>): Migration.Divert.cs.
    /// Must return at once (it may be called on the hypervisor's event thread) and its task must not throw.</summary>
    public Func<CancellationToken, Task>? SourceStopped { get; set; }

    public MigrationPhase Phase => _state.Phase;

    /// <summary>Runs every phase; returns the report at the end, or throws (source untouched) before the hand-over.</summary>
    public async Task<MigrationReport> RunAsync(CancellationToken cancellationToken)
    {
        _clock.Start();
        _timeline?.Start();
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (_options.Timeout is { } t) deadline.CancelAfter(t);
        var ct = deadline.Token;
        _runToken = ct;
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
            if (_state.Plan == SwitchoverPlan.Finish)
                hv = await FinishHandOverAsync(ct);
            else
            {
                await _hypervisor.PrepareAsync(ct);
                await PreCopyAsync(ct);
                hv = await MigrateMemoryAsync(ct);
                if (!_state.IsHandedOver) throw new MigrationException($"hypervisor {_hypervisor.Name} finished without calling the switchover");
                await AwaitFinalDataAsync();
                await AwaitDivertAsync();
            }
            await AfterCommitAsync();
            SetPhase(MigrationPhase.Done);
            return BuildReport(hv) with { Timeline = _timeline == null ? null : await TimelineOfAsync(_timeline, hv) };
        }
        catch (Exception e) when (!_state.IsHandedOver)
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
            foreach (var d in _disks) TryRun($"disk {d.Name}: releasing the throttle", () => d.Map.SetThrottle(0));
        }
    }

    private void OpenDisks()
    {
        var names = new HashSet<string>();
        foreach (var spec in _options.Disks)
        {
            if (!names.Add(spec.Name)) throw new MigrationException($"disk {spec.Name} named twice");
            _disks.Add(new SourceDisk((ushort)_disks.Count, spec, _log));
        }
        foreach (var d in _disks)
        {
            var info = d.Map.Counters();
            _delayedAtStart += info.Throttled;
            _writtenAtRound += info.BytesWritten;
        }
    }

    private void SetPhase(MigrationPhase phase)
    {
        _state.Enter(phase);
        _timeline?.Phase(phase);
        Say($"phase: {phase}");
        RaiseProgress();
    }

    private void Say(string line) => _log.Line(line);

    private void Warn(string line) => _log.Warning(line);

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
                throttle = Math.Max(throttle, d.Map.Counters().ThrottleBytesPerSecond);
            }
            catch (BlockMigrateException e)
            {
                _log.Ignored($"disk {d.Name}: reading the map for the progress line", e.Message);
            }
        }
        var liveRate = LiveRate();
        var done = _producer == null ? 0 : Interlocked.Read(ref _producer.DataBytes) + Interlocked.Read(ref _producer.ZeroBytes) - _roundBytesStart;
        var drain = _rates.BlockRate > 0 ? _rates.BlockRate : liveRate;
        TimeSpan? eta = drain > 0 && _roundBytesTotal > 0 ? TimeSpan.FromSeconds(Math.Max(0, _roundBytesTotal - done) / drain) : null;
        try
        {
            handler(new MigrationProgress(_state.Phase, _round, done, _roundBytesTotal, liveRate, dirty, dirtyBytes, throttle, eta, _clock.Elapsed)
            {
                BlocksFromSeeds = _sender?.SeedBlocks ?? 0,
                BlocksSent = _producer == null ? 0 : Interlocked.Read(ref _producer.DataBlocks),
                ReturnBaseBlocks = ReturnBaseBlocks,
            });
        }
        catch (Exception e) when (e is IOException or InvalidOperationException)
        {
            _log.Ignored("a progress handler", e.Message);
        }
    }

    /// <summary>Socket bytes per second over the last progress interval, smoothed.</summary>
    private double LiveRate() => _channel is { } c ? _socketRate.Sample(c.Counter.BytesWritten, Stopwatch.GetTimestamp()) : 0;

    /// <summary>Best effort: a failure of <paramref name="a"/> is not acted on, only logged (debug), as <paramref name="what"/>.</summary>
    private void TryRun(string what, Action a)
    {
        try
        {
            a();
        }
        catch (BlockMigrateException e)
        {
            _log.Ignored(what, e.Message);
        }
    }

    /// <summary>The timeline, with the hypervisor's STOP and RESUME times where it reported them.</summary>
    private static async Task<Timeline> TimelineOfAsync(TimelineSampler sampler, HypervisorReport hv)
    {
        if (hv.StoppedAt is { } stop) sampler.Mark(TimelineMarks.Stop, stop);
        if (hv.ResumedAt is { } resume) sampler.Mark(TimelineMarks.Resume, resume);
        return await sampler.StopAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (_timeline != null) await _timeline.DisposeAsync();
        if (_sender != null) await _sender.DisposeAsync();
        if (_channel != null) await _channel.DisposeAsync();
        foreach (var d in _disks) d.Dispose();
        await _hypervisor.DisposeAsync();
    }
}
