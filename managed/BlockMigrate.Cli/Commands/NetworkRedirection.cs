// Runs an IRedirector around one migration, in the order docs/network.md gives:
//   PrepareAsync                before the migration starts (TTL lowered, tunnel links built)
//   DivertAsync                 at the source VM's stop (Migration.SourceStopped: QEMU's STOP event, or the
//                               switchover's start): the tunnel takes the old address now, so what clients
//                               send during the downtime waits at the destination; the hand-over does not
//                               wait for it, the redirect (DNS) and the migration's report do
//   RedirectAsync               started at the hand-over (Migration.HandedOver): the DNS update
//   WaitDrainedAndTeardownAsync after the migration returned: the command stays in the foreground,
//                               showing the wait, until the tunnel is gone; Ctrl-C/SIGTERM tears it down now
//   AbortAsync                  when the migration fails before the hand-over, or on Ctrl-C
// The redirector never throws for operational failures (only for cancellation): it logs them itself and
// they are in the report.
using BlockMigrate.Cli.Status;
using BlockMigrate.Network;
using NLog;

namespace BlockMigrate.Cli.Commands;

public sealed class NetworkRedirection
{
    private static readonly Logger Log = LogManager.GetLogger("network");
    private readonly IRedirector _redirector;
    private readonly RedirectionOptions? _options;
    private readonly ProgressDisplay _display;
    private readonly StatusFile? _status;
    private Task? _divert;              // set once, by OnSourceStopped (the hypervisor's event thread or the switchover's), before the hand-over
    private Task? _redirect;            // set once, by OnHandedOver (the switchover's thread)
    private CancellationToken _ct;      // the command's token, for the redirect started at the hand-over

    public NetworkRedirection(RedirectionOptions? options, ProgressDisplay display, StatusFile? status)
    {
        _options = options;
        _redirector = options is null ? new NoneRedirector() : Redirectors.Create(options, new Logging.NLogLoggerFactory());
        _display = display;
        _status = status;
        Report = _redirector.Report;
    }

    /// <summary>The latest report: the <c>network</c> section of the migrate report.</summary>
    public RedirectionReport Report { get; private set; }

    /// <summary>True when a DNS update was tried and failed (exit status 3).</summary>
    public bool DnsFailed => Report.DnsFailed;

    public async Task PrepareAsync(CancellationToken ct)
    {
        _ct = ct;
        if (_options is null) return;
        Log.Info($"network: preparing {_redirector.Kind} for {_options.VmName}" +
                 $"{(_options.DnsPrepareTtl is { } ttl ? $" (lowering the TTL of {_options.DnsName} to {ttl} s)" : "")}");
        Report = await _redirector.PrepareAsync(ct);
        if (Report.TunnelLink is { } link) Log.Info($"network: tunnel {link} ({Report.TunnelKindReason}) prepared");
        if (Report.DnsPreparedAt is not null && Report.DnsPreviousTtl is { } prev)
            Log.Info($"network: TTL of {_options.DnsName} lowered from {prev} s to {Report.DnsPreparedTtl} s; old answers expire by {Report.DnsOldTtlExpiresAt:HH:mm:ss}");
    }

    /// <summary>The engine waits this long at most for the divert before it reports (the hand-over does not wait
    /// for it); the divert goes on regardless, and the redirect and <see cref="FinishAsync"/> wait for it.</summary>
    private static readonly TimeSpan DivertWait = TimeSpan.FromSeconds(2);

    /// <summary>Hook for <c>Migration.SourceStopped</c>: sends the old address into the tunnel now (returns at once;
    /// runs once); the returned task (which never throws) ends when that is done, or after <see cref="DivertWait"/>.
    /// A switch that fails is an error in the report (the tunnel is removed), never an exception.</summary>
    public Task OnSourceStopped(CancellationToken ct)
    {
        if (_options is null || !_options.TunnelEnabled || _divert is not null) return Task.CompletedTask;
        _divert = Task.Run(async () =>
        {
            Report = await _redirector.DivertAsync(_ct);
            if (Report.TunnelUpAt is not null)
                Log.Info($"network: tunnel {Report.TunnelLink} up at the freeze: {_options.OldAddress} now goes to the destination");
        });
        return WaitQuietly(_divert, ct);
    }

    private static async Task WaitQuietly(Task t, CancellationToken ct)
    {
        try { await t.WaitAsync(DivertWait, ct); }
        catch (TimeoutException) { Log.Warn($"network: the tunnel is not up {DivertWait.TotalSeconds:0} s after the freeze; the redirection still waits for it"); }
        catch (OperationCanceledException) { }
        catch (Exception e) { Log.Warn($"network: {e.Message}"); }
    }

    /// <summary>Handler for <c>Migration.HandedOver</c>: starts the redirection without blocking the switchover.</summary>
    public void OnHandedOver()
    {
        if (_options is null || _redirect is not null) return;
        _status?.OnNetwork("network", "redirecting");
        var divert = _divert;
        _redirect = Task.Run(async () =>
        {
            if (divert is not null) await divert;
            Report = await _redirector.RedirectAsync(_ct);
            if (Report.TunnelUpAt is not null)
                Log.Info($"network: tunnel {Report.TunnelLink} up, carrying {Report.ConnectionsAtTunnelUp ?? 0} open connection(s) to {_options.OldAddress}");
            if (Report.DnsStatus == DnsUpdateStatus.Updated)
                Log.Info($"network: {_options.DnsName} now points at {string.Join(", ", Report.DnsAddresses ?? [])}");
        });
    }

    /// <summary>After the migration: finishes the redirection, then waits (in the foreground) until the
    /// tunnel is gone. Cancellation (Ctrl-C) tears it down at once; it does not throw.</summary>
    public async Task FinishAsync(CancellationToken ct)
    {
        if (_options is null) return;
        try
        {
            if (_redirect is null) OnHandedOver(); // a hypervisor that returned without the event: redirect now
            await _redirect!;
            if (!_options.TunnelEnabled || Report.TunnelUpAt is null && Report.TunnelRemovedAt is not null) return;
            var started = DateTimeOffset.UtcNow;
            var deadline = (Report.TunnelUpAt ?? started) + _options.TunnelTimeout;
            Log.Info($"network: waiting until no connection to {_options.OldAddress} is left (at most until {deadline.ToLocalTime():HH:mm:ss}); Ctrl-C removes the tunnel now");
            using var ticker = new Timer(_ =>
            {
                var line = $"tunnel {Report.TunnelLink} up {(DateTimeOffset.UtcNow - started).TotalSeconds:0} s, waiting for connections to {_options.OldAddress} to close" +
                           $" (timeout in {Math.Max(0, (deadline - DateTimeOffset.UtcNow).TotalSeconds):0} s)";
                _display.Show(line);
                _status?.OnNetwork("draining", line);
            }, null, TimeSpan.Zero, TimeSpan.FromSeconds(1));
            Report = await _redirector.WaitDrainedAndTeardownAsync(ct);
        }
        catch (OperationCanceledException)
        {
            Log.Warn("network: interrupted; removing the tunnel now");
            Report = await _redirector.AbortAsync(CancellationToken.None);
        }
        finally
        {
            _display.Finish();
        }
        if (Report.TunnelRemovedAt is not null)
            Log.Info($"network: tunnel removed ({Report.TunnelRemovedBecause}; {Report.ConnectionsAtRemoval ?? 0} connection(s) still open)");
    }

    /// <summary>The migration failed before the hand-over: remove what prepare added, restore the TTL.</summary>
    public async Task AbortAsync()
    {
        if (_options is null) return;
        foreach (var t in new[] { _divert, _redirect })
        {
            if (t is null) continue;
            try { await t; }
            catch (OperationCanceledException) { }
        }
        Report = await _redirector.AbortAsync(CancellationToken.None);
        Log.Info("network: prepared redirection undone");
    }
}
