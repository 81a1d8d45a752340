using System.Diagnostics;

namespace BlockMigrate.Network;

public sealed partial class TunnelRedirector
{
    sealed record Undo(string Host, string What, Func<CancellationToken, Task<string?>> Run);

    void Push(IHostRunner host, string which, string what, Func<CancellationToken, Task<string?>> run) =>
        _undo.Add(new Undo($"{which} ({host.Description})", what, run));

    // "Already gone" answers from ip and nft: deleting what is not there is what we wanted.
    static bool IsGone(HostCommandResult r) =>
        r.StandardError.Contains("No such file or directory", StringComparison.Ordinal)
        || r.StandardError.Contains("No such process", StringComparison.Ordinal)
        || r.StandardError.Contains("Cannot find device", StringComparison.Ordinal)
        || r.StandardError.Contains("does not exist", StringComparison.Ordinal);

    // Polls conntrack on the source host until no live connection to or from the old address is left
    // (after the minimum hold), or the timeout passes.
    async Task<(TunnelRemovalReason Reason, int Live)> WaitDrainedAsync(CancellationToken ct)
    {
        var since = _report.TunnelUpAt ?? DateTimeOffset.UtcNow;
        var clock = Stopwatch.StartNew();
        var already = DateTimeOffset.UtcNow - since;
        int live = -1;
        while (true)
        {
            var up = already + clock.Elapsed;
            if (up >= _options.TunnelTimeout)
            {
                _log.TunnelTimedOut(_plan.Link, _options.TunnelTimeout, live);
                return (TunnelRemovalReason.Timeout, Math.Max(live, 0));
            }
            if (!_noConntrack)
            {
                live = await LiveConnectionsAsync(ct).ConfigureAwait(false) ?? -1;
                if (live == 0 && up >= _options.TunnelMinimumHold)
                {
                    _log.TunnelDrained(_plan.Link, _plan.OldAddress, up.TotalSeconds);
                    return (TunnelRemovalReason.Drained, 0);
                }
            }
            var left = _options.TunnelTimeout - up;
            await Task.Delay(left < _options.DrainPollInterval ? left : _options.DrainPollInterval, ct).ConfigureAwait(false);
        }
    }

    // Connections to or from the old address in the source host's conntrack table that keep the tunnel
    // (ConntrackDrain: established ones, and half-open or closing ones while packets still move them);
    // null if conntrack failed.
    async Task<int?> LiveConnectionsAsync(CancellationToken ct)
    {
        var listing = new System.Text.StringBuilder();
        foreach (var dir in new[] { "-d", "-s" })
        {
            var r = await _source.RunAsync("conntrack", ["-L", "-f", "ipv4", dir, _plan.OldAddress.ToString()], null, ct).ConfigureAwait(false);
            if (!r.Succeeded)
            {
                if (!_report.Errors.Any(e => e.Step == "drain"))
                    Error("drain", $"conntrack -L on the source host failed ({r.FirstErrorLine}); treating connections as open");
                return null;
            }
            listing.Append(r.StandardOutput).Append('\n');
        }
        lock (_drain)
        {
            var poll = _drain.Count(listing.ToString());
            foreach (var e in poll.Stale)
                if (_staleLogged.Add(e.Key))
                    _log.TunnelStaleEntry(_plan.Link, e.ToString(), _options.DrainStaleAfter.TotalSeconds);
            return poll.Live;
        }
    }

    // Plays the undo list backwards. Caller holds _step. Errors are reported, and the rest still runs.
    async Task RemoveAllAsync(TunnelRemovalReason reason, int? live, CancellationToken ct)
    {
        await CloseShellsAsync().ConfigureAwait(false);
        await _shellsClosing.ConfigureAwait(false);
        bool hadAnything = _undo.Count > 0;
        for (int i = _undo.Count - 1; i >= 0; i--)
        {
            var u = _undo[i];
            string? err;
            try { err = await u.Run(ct).ConfigureAwait(false); }
            catch (OperationCanceledException) { throw; }
            catch (Exception ex) { err = ex.Message; }
            if (err is not null)
                Error("teardown", $"could not remove {u.What} on the {u.Host}: {err}; remove it by hand");
            _undo.RemoveAt(i);
        }
        var wasUp = _state == State.Up;
        _state = State.Removed;
        if (hadAnything)
        {
            _report = _report with
            {
                TunnelRemovedAt = DateTimeOffset.UtcNow,
                TunnelRemovedBecause = reason,
                ConnectionsAtRemoval = live,
            };
            _log.TunnelRemoved(_plan.Link, reason, wasUp ? "" : " before it carried traffic");
        }
    }
}
