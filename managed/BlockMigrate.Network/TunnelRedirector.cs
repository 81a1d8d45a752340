using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace BlockMigrate.Network;

/// <summary>
/// Keeps connections to the VM's old address alive after it moved, with a tunnel from the source host to
/// the destination host (Bradford et al. §3.3), built with iproute2 through CliWrap.
///
/// <code>
///  client ──► source host ──rule "to OLD" → table T: OLD via overlay──► bmtunN ══ VXLAN/GRE/IPIP/WG ══╗
///                 ▲                                                                                  ║
///                 ║                                      destination host: bmtunN ◄══════════════════╝
///                 ║                                        rule "to OLD iif bmtunN" → table T: OLD dev VM-link ──► VM
///                 ╚════════ bmtunN ◄── rule "from OLD iif VM-link" → table T: default via overlay ◄── replies from OLD
/// </code>
///
/// Prepare installs the links, all rules and the destination's whole table T (its rules only take what
/// comes out of the tunnel and what the VM sends from the old address on its link, so nothing before the
/// switch or before the VM runs there); the switch at the freeze is one route on the source ("OLD via
/// overlay"). Until then the source's table T is empty and a rule whose table has no matching route falls
/// through to the next rule (main), so nothing changes for traffic before the switch.
///
/// Replies go back through the tunnel (not straight from the destination), so they leave the source host
/// exactly as before the move: the client, its firewalls and strict reverse-path filters see the same path.
/// The source host's conntrack sees both directions, which is how we know when connections have drained;
/// our nft chain (table inet blockmigrate, chain tN) only makes sure conntrack tracks the old address.
///
/// Everything we add is pushed on an undo list before it is added, and the list is played back on
/// teardown or abort; we only ever delete what is on it. Our things: links bmtunN, their /30 overlay
/// addresses, routing table T (checked empty first), our rules (one on the source, two on the destination) at <see cref="RedirectionOptions.RulePriority"/>,
/// and chain tN in table inet blockmigrate (the table is removed when its last chain is).
/// Requirements: iproute2 and IPv4 forwarding on both hosts, conntrack-tools on the source host.
/// </summary>
public sealed partial class TunnelRedirector : IRedirector, IAsyncDisposable
{
    readonly ILogger _log;

    readonly RedirectionOptions _options;
    readonly IHostRunner _source;
    readonly IHostRunner _destination;
    readonly TunnelPlan _plan;
    readonly SemaphoreSlim _step = new(1, 1);            // one step at a time (Abort waits for the running step)
    readonly CancellationTokenSource _abort = new();     // cancelled by AbortAsync, stops the drain wait
    readonly TaskCompletionSource _abortDone = new(TaskCreationOptions.RunContinuationsAsynchronously);   // set when AbortAsync has finished
    readonly List<Undo> _undo = [];                      // guarded by _step
    RedirectionReport _report = new() { Redirector = "tunnel" };   // written under _step
    TunnelKind? _kind;                                   // chosen at prepare
    State _state;                                        // guarded by _step
    bool _noConntrack;                                   // conntrack missing: drain by timeout only
    readonly ConntrackDrain _drain;                      // the drain's memory of conntrack entries (lock it)
    readonly HashSet<string> _staleLogged = [];          // entries already logged as stale (under _drain's lock)
    HostShell? _sourceShell;                             // open from prepare to the switch (guarded by _step)
    Task _shellsClosing = Task.CompletedTask;            // their end, after the switch

    enum State { New, Prepared, Up, Removed }

    /// <summary>A tunnel redirector running source commands via <paramref name="source"/> and destination
    /// commands via <paramref name="destination"/>.</summary>
    public TunnelRedirector(RedirectionOptions options, IHostRunner source, IHostRunner destination, ILogger? logger = null)
    {
        _log = logger ?? NullLogger.Instance;
        if (options.Validate() is { Count: > 0 } errors)
            throw new ArgumentException(string.Join("; ", errors), nameof(options));
        if (!options.TunnelEnabled)
            throw new ArgumentException("tunnel kind is none", nameof(options));
        _options = options;
        _source = source;
        _destination = destination;
        _plan = TunnelPlan.From(options);
        _drain = new ConntrackDrain(options.DrainStaleAfter);
    }

    /// <summary>A tunnel redirector with runners from <see cref="RedirectionOptions.SourceCommand"/> and
    /// <see cref="RedirectionOptions.DestinationCommand"/>.</summary>
    public TunnelRedirector(RedirectionOptions options, ILogger? logger = null)
        : this(options, CommandPrefixRunner.Parse(options.SourceCommand), CommandPrefixRunner.Parse(options.DestinationCommand), logger)
    {
    }

    /// <inheritdoc/>
    public string Kind => "tunnel";

    /// <inheritdoc/>
    public RedirectionReport Report => _report;

    /// <summary>The link name on both hosts.</summary>
    public string LinkName => _plan.Link;

    /// <inheritdoc/>
    public async Task<RedirectionReport> PrepareAsync(CancellationToken cancellationToken)
    {
        await _step.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_state == State.New) await PrepareCoreAsync(cancellationToken).ConfigureAwait(false);
            return _report;
        }
        finally { _step.Release(); }
    }

    /// <inheritdoc/>
    /// <remarks>The tunnel's whole switch (the rules); <see cref="RedirectAsync"/> then only counts the
    /// connections the tunnel carries (<see cref="RedirectionReport.ConnectionsAtTunnelUp"/>), which the
    /// hand-over need not wait for.</remarks>
    public Task<RedirectionReport> DivertAsync(CancellationToken cancellationToken) => SwitchAsync(count: false, cancellationToken);

    /// <inheritdoc/>
    public Task<RedirectionReport> RedirectAsync(CancellationToken cancellationToken) => SwitchAsync(count: true, cancellationToken);

    async Task<RedirectionReport> SwitchAsync(bool count, CancellationToken cancellationToken)
    {
        await _step.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_state == State.New && !await PrepareCoreAsync(cancellationToken).ConfigureAwait(false))
                return _report;
            if (_state == State.Prepared) await RedirectCoreAsync(cancellationToken).ConfigureAwait(false);
            if (count && _state == State.Up && _report.ConnectionsAtTunnelUp is null && !_noConntrack)
            {
                var live = await LiveConnectionsAsync(cancellationToken).ConfigureAwait(false);
                _report = _report with { ConnectionsAtTunnelUp = live };
                _log.TunnelLiveConnections(_plan.Link, live?.ToString() ?? "unknown", _plan.OldAddress);
            }
            return _report;
        }
        finally { _step.Release(); }
    }

    /// <inheritdoc/>
    public async Task<RedirectionReport> WaitDrainedAndTeardownAsync(CancellationToken cancellationToken)
    {
        if (_state != State.Up)
            return _report;
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _abort.Token);
        TunnelRemovalReason reason;
        int live;
        try
        {
            (reason, live) = await WaitDrainedAsync(linked.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_abort.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            // AbortAsync is removing everything: wait for it, then its report is ours.
            await _abortDone.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            return _report;
        }
        await _step.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_state == State.Up) await RemoveAllAsync(reason, live, cancellationToken).ConfigureAwait(false);
            return _report;
        }
        finally { _step.Release(); }
    }

    /// <inheritdoc/>
    public async Task<RedirectionReport> AbortAsync(CancellationToken cancellationToken)
    {
        await _abort.CancelAsync().ConfigureAwait(false);
        await _step.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_state is State.Prepared or State.Up || _undo.Count > 0)
                await RemoveAllAsync(TunnelRemovalReason.Aborted, null, cancellationToken).ConfigureAwait(false);
            _state = State.Removed;   // an aborted redirector stays done
            return _report;
        }
        finally
        {
            _step.Release();
            _abortDone.TrySetResult();
        }
    }

    /// <summary>Aborts (removes everything) if the tunnel is still there.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_state is State.Prepared or State.Up)
            await AbortAsync(CancellationToken.None).ConfigureAwait(false);
        await CloseShellsAsync().ConfigureAwait(false);
        await _shellsClosing.ConfigureAwait(false);
        _abort.Dispose();
        _step.Dispose();
    }

    void Error(string step, string message)
    {
        _log.StepFailed(step, message);
        _report = _report.WithError(step, message);
    }
}
