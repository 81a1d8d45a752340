using System.Net;
using System.Net.Sockets;
using System.Text.Json;

namespace BlockMigrate.Network;

public sealed partial class TunnelRedirector
{
    // Prepare: probe, check, start tracking on the source, build the links on both hosts. No traffic moves.
    async Task<bool> PrepareCoreAsync(CancellationToken ct)
    {
        var (kind, why) = await TunnelKindProbe.ChooseAsync(_options.Tunnel, _source, _destination, ct).ConfigureAwait(false);
        _report = _report with { TunnelKind = kind, TunnelKindReason = why, TunnelLink = _plan.Link };
        _log.TunnelKindChosen(kind?.ToString() ?? "none", why);
        if (kind is null)
        {
            Error("prepare", $"no usable tunnel kind: {why}");
            return false;
        }
        _kind = kind;
        try
        {
            await CheckHostAsync(_source, "source", ct).ConfigureAwait(false);
            await CheckHostAsync(_destination, "destination", ct).ConfigureAwait(false);
            var conntrack = await _source.RunAsync("conntrack", ["--version"], null, ct).ConfigureAwait(false);
            if (!conntrack.Succeeded)
            {
                _noConntrack = true;
                Error("prepare", $"conntrack (conntrack-tools) does not run on the source host ({conntrack.FirstErrorLine}); the tunnel will stay until --tunnel-timeout");
            }
            var local = _options.TunnelLocal ?? await RouteSourceAsync(_options.TunnelRemote!, ct).ConfigureAwait(false);
            var remote = _options.TunnelRemote!;

            var (dev, gateway) = await DestinationVmLinkAsync(ct).ConfigureAwait(false);

            await StartTrackingAsync(ct).ConfigureAwait(false);
            await AddLinkAsync(_source, "source", local, remote, _plan.OverlaySource, ct).ConfigureAwait(false);
            await AddLinkAsync(_destination, "destination", remote, local, _plan.OverlayDestination, ct).ConfigureAwait(false);
            if (kind == TunnelKind.WireGuard)
                await ConfigureWireGuardAsync(local, remote, ct).ConfigureAwait(false);
            // The rules on both hosts and all of the destination's table T, now. Nothing moves yet: the source's
            // table T stays empty (a rule whose table has no route falls through to the next rule: main); the
            // destination's rules take only what comes out of the tunnel (nothing, until the source's switch)
            // and what comes from the old address out of the VM's link (nothing, until the VM runs there). So
            // the reply route is there before the VM can answer (replies never leave the destination another
            // way, and the source's conntrack sees every tunnelled connection both ways), and the switch at the
            // freeze is one `ip route add` on the source.
            string toVm = gateway is null ? $"dev {dev}" : $"via {gateway} dev {dev}";
            await BatchAsync(_destination, "destination",
            [
                ($"route add {_plan.Old32} {toVm} table {_plan.Table}", $"route del {_plan.Old32} table {_plan.Table}"),
                ($"route add default via {_plan.OverlaySource} dev {_plan.Link} table {_plan.Table}", $"route del default table {_plan.Table}"),
                ($"rule add to {_plan.Old32} iif {_plan.Link} lookup {_plan.Table} pref {_plan.RulePriority}", $"rule del to {_plan.Old32} iif {_plan.Link} lookup {_plan.Table} pref {_plan.RulePriority}"),
                ($"rule add from {_plan.Old32} iif {dev} lookup {_plan.Table} pref {_plan.RulePriority}", $"rule del from {_plan.Old32} iif {dev} lookup {_plan.Table} pref {_plan.RulePriority}"),
            ], ct).ConfigureAwait(false);
            await BatchAsync(_source, "source",
            [
                ($"rule add to {_plan.Old32} lookup {_plan.Table} pref {_plan.RulePriority}", $"rule del to {_plan.Old32} lookup {_plan.Table} pref {_plan.RulePriority}"),
            ], ct).ConfigureAwait(false);
            _sourceShell = await StartShellAsync(_source, "source", ct).ConfigureAwait(false);
        }
        catch (SetupException ex)
        {
            Error("prepare", ex.Message);
            await RemoveAllAsync(TunnelRemovalReason.SetupFailed, null, ct).ConfigureAwait(false);
            return false;
        }
        _state = State.Prepared;
        _report = _report with { TunnelPreparedAt = DateTimeOffset.UtcNow };
        _log.TunnelPrepared(_plan.Link, kind, _source.Description, _destination.Description, _plan.Table);
        return true;
    }

    // Redirect (at the freeze: the source VM has stopped): one route on the source turns traffic for the old
    // address into the tunnel (the destination's side is all in place since prepare). Packets that reach the
    // destination before its VM runs wait in the VM's tap (a paused QEMU does not read it) instead of being
    // lost with the source QEMU.
    async Task RedirectCoreAsync(CancellationToken ct)
    {
        try
        {
            await BatchAsync(_source, "source",
            [
                ($"route add {_plan.Old32} via {_plan.OverlayDestination} dev {_plan.Link} table {_plan.Table}", $"route del {_plan.Old32} table {_plan.Table}"),
            ], ct, _sourceShell).ConfigureAwait(false);
        }
        catch (SetupException ex)
        {
            Error("tunnel", ex.Message);
            await RemoveAllAsync(TunnelRemovalReason.SetupFailed, null, ct).ConfigureAwait(false);
            return;
        }
        finally
        {
            _shellsClosing = CloseShellsAsync();   // used once; they end in the background
        }
        _state = State.Up;
        _report = _report with { TunnelUpAt = DateTimeOffset.UtcNow };
        _log.TunnelSwitched(_plan.Link, _plan.OldAddress, _destination.Description);
    }

    async Task CheckHostAsync(IHostRunner host, string which, CancellationToken ct)
    {
        var fwd = await host.RunAsync("sysctl", ["-n", "net.ipv4.ip_forward"], null, ct).ConfigureAwait(false);
        if (!fwd.Succeeded || fwd.StandardOutput.Trim() != "1")
            throw new SetupException($"the {which} host ({host.Description}) does not forward IPv4 (net.ipv4.ip_forward={fwd.StandardOutput.Trim()}); enable it to carry the VM's traffic");
        var link = await host.RunAsync("ip", ["link", "show", "dev", _plan.Link], null, ct).ConfigureAwait(false);
        if (link.Succeeded)
            throw new SetupException($"link {_plan.Link} already exists on the {which} host: another migration uses tunnel id {_plan.Id}; set a different tunnel-id");
        var table = await host.RunAsync("ip", ["route", "show", "table", _plan.Table.ToString()], null, ct).ConfigureAwait(false);
        bool empty = table.Succeeded ? table.StandardOutput.Trim().Length == 0
            : table.StandardError.Contains("does not exist", StringComparison.Ordinal);   // a table never used
        if (!empty)
            throw new SetupException($"routing table {_plan.Table} on the {which} host is not empty or not readable ({table.FirstErrorLine}); set routing-table to a free one");
    }

    async Task<IPAddress> RouteSourceAsync(IPAddress remote, CancellationToken ct)
    {
        var r = await _source.RunAsync("ip", ["-j", "route", "get", remote.ToString()], null, ct).ConfigureAwait(false);
        var (_, _, prefsrc) = ParseRouteGet(r);
        if (prefsrc is null || !IPAddress.TryParse(prefsrc, out var a))
            throw new SetupException($"the source host has no route to the destination {remote} ({r.FirstErrorLine}); set tunnel-local");
        return a;
    }

    async Task<(string Dev, string? Gateway)> DestinationVmLinkAsync(CancellationToken ct)
    {
        if (_options.DestinationVmDevice is { } dev) return (dev, null);
        var newV4 = _options.NewAddresses.First(a => a.AddressFamily == AddressFamily.InterNetwork);
        var r = await _destination.RunAsync("ip", ["-j", "route", "get", newV4.ToString()], null, ct).ConfigureAwait(false);
        var (d, gw, _) = ParseRouteGet(r);
        if (d is null || d == "lo" || d == _plan.Link)
            throw new SetupException($"cannot find the VM's link on the destination from the route to {newV4} ({(d ?? r.FirstErrorLine)}); set destination-vm-device");
        return (d, gw);
    }

    static (string? Dev, string? Gateway, string? PrefSrc) ParseRouteGet(HostCommandResult r)
    {
        if (!r.Succeeded) return (null, null, null);
        try
        {
            using var doc = JsonDocument.Parse(r.StandardOutput);
            if (doc.RootElement.ValueKind != JsonValueKind.Array || doc.RootElement.GetArrayLength() == 0)
                return (null, null, null);
            var e = doc.RootElement[0];
            string? Get(string name) => e.TryGetProperty(name, out var v) ? v.GetString() : null;
            return (Get("dev"), Get("gateway"), Get("prefsrc"));
        }
        catch (JsonException) { return (null, null, null); }
    }

    // Our chain in our table; a ct expression makes the kernel track connections in this namespace even if
    // nothing else on the host uses conntrack. It only counts; it never drops or accepts.
    async Task StartTrackingAsync(CancellationToken ct)
    {
        if (_noConntrack) return;
        var t = $"inet {TunnelPlan.NftTable}";
        var c = _plan.NftChain;
        Push(_source, "source", $"nft chain {t} {c}", async token =>
        {
            var r = await _source.RunAsync("nft", ["-f", "-"], $"flush chain {t} {c}\ndelete chain {t} {c}\n", token).ConfigureAwait(false);
            if (!r.Succeeded && !IsGone(r)) return r.FirstErrorLine;
            var list = await _source.RunAsync("nft", ["list", "table", "inet", TunnelPlan.NftTable], null, token).ConfigureAwait(false);
            if (list.Succeeded && !list.StandardOutput.Contains("chain ", StringComparison.Ordinal))
            {
                var del = await _source.RunAsync("nft", ["delete", "table", "inet", TunnelPlan.NftTable], null, token).ConfigureAwait(false);
                if (!del.Succeeded && !IsGone(del)) return del.FirstErrorLine;
            }
            return null;
        });
        var script =
            $"add table {t}\n" +
            $"add chain {t} {c} {{ type filter hook forward priority filter - 5; policy accept; }}\n" +
            $"add rule {t} {c} ip daddr {_plan.OldAddress} ct state established,related,new counter\n" +
            $"add rule {t} {c} ip saddr {_plan.OldAddress} ct state established,related,new counter\n";
        var res = await _source.RunAsync("nft", ["-f", "-"], script, ct).ConfigureAwait(false);
        if (!res.Succeeded)
            throw new SetupException($"nft on the source host failed: {res.FirstErrorLine}");
    }

    async Task AddLinkAsync(IHostRunner host, string which, IPAddress local, IPAddress remote, IPAddress overlay,
        CancellationToken ct)
    {
        string type = _kind switch
        {
            TunnelKind.Vxlan => $"vxlan id {_plan.Vni} local {local} remote {remote} dstport {_options.TunnelPort}",
            TunnelKind.Gre => $"gre local {local} remote {remote} key {_plan.Vni} ttl 64",
            TunnelKind.Ipip => $"ipip local {local} remote {remote} ttl 64",
            TunnelKind.WireGuard => "wireguard",
            _ => throw new InvalidOperationException("tunnel kind not chosen"),
        };
        await BatchAsync(host, which,
        [
            ($"link add {_plan.Link} type {type}", $"link del {_plan.Link}"),
            // no IPv6 link-local address: nothing but our IPv4 traffic goes over the tunnel
            ($"link set {_plan.Link} addrgenmode none", null),
            ($"addr add {overlay}/30 dev {_plan.Link}", null),
            ($"link set {_plan.Link} up", null),
        ], ct).ConfigureAwait(false);
    }

    async Task ConfigureWireGuardAsync(IPAddress local, IPAddress remote, CancellationToken ct)
    {
        async Task<(string Private, string Public)> KeysAsync(IHostRunner host)
        {
            var priv = await host.RunAsync("wg", ["genkey"], null, ct).ConfigureAwait(false);
            if (!priv.Succeeded) throw new SetupException($"wg genkey failed on {host.Description}: {priv.FirstErrorLine}");
            var pub = await host.RunAsync("wg", ["pubkey"], priv.StandardOutput, ct).ConfigureAwait(false);
            if (!pub.Succeeded) throw new SetupException($"wg pubkey failed on {host.Description}: {pub.FirstErrorLine}");
            return (priv.StandardOutput.Trim(), pub.StandardOutput.Trim());
        }
        var s = await KeysAsync(_source).ConfigureAwait(false);
        var d = await KeysAsync(_destination).ConfigureAwait(false);
        foreach (var (host, mine, peer, peerAddr) in new[] { (_source, s, d, remote), (_destination, d, s, local) })
        {
            var port = _options.TunnelPort.ToString();
            var r = await host.RunAsync("wg", ["set", _plan.Link, "listen-port", port, "private-key", "/dev/stdin",
                "peer", peer.Public, "endpoint", $"{peerAddr}:{port}", "allowed-ips", "0.0.0.0/0"], mine.Private + "\n", ct).ConfigureAwait(false);
            if (!r.Succeeded) throw new SetupException($"wg set on {host.Description} failed: {r.FirstErrorLine}");
        }
    }

    // The source host's shell for the switch at the freeze, started at prepare; a runner without one, or a
    // shell that does not answer at once, leaves the switch to `ip -batch`.
    async Task<HostShell?> StartShellAsync(IHostRunner host, string which, CancellationToken ct)
    {
        if (host is not IHostShellRunner runner || runner.StartShell() is not { } shell) return null;
        var (usable, error) = await shell.RunIpAsync(["-V"], TimeSpan.FromSeconds(10), ct).ConfigureAwait(false);
        if (usable && error is null) return shell;
        _log.NoShell(which, error);
        await shell.DisposeAsync().ConfigureAwait(false);
        return null;
    }

    // Detaches the shells at once (the caller goes on), and ends them.
    Task CloseShellsAsync()
    {
        var shell = _sourceShell;
        _sourceShell = null;
        return shell is null ? Task.CompletedTask : shell.DisposeAsync().AsTask();
    }

    // Runs iproute2 lines as one `ip -batch -` (one process: the switch to the tunnel is one short step),
    // or one by one in the host's open shell if there is one (no process to start: the switch at the freeze).
    // Each line's inverse goes on the undo list before the batch runs, so a batch that stops half-way
    // is undone too (deleting what was never added counts as done).
    async Task BatchAsync(IHostRunner host, string which, (string Do, string? Undo)[] lines, CancellationToken ct, HostShell? shell = null)
    {
        foreach (var (_, undo) in lines)
            if (undo is not null)
                Push(host, which, $"ip {undo}", async token =>
                {
                    var r = await host.RunAsync("ip", [.. undo.Split(' ')], null, token).ConfigureAwait(false);
                    return r.Succeeded || IsGone(r) ? null : r.FirstErrorLine;
                });
        if (shell is not null)
        {
            var (usable, error) = await shell.RunIpAsync([.. lines.Select(l => l.Do)], TimeSpan.FromSeconds(5), ct).ConfigureAwait(false);
            if (usable && error is null) return;
            if (usable)
                throw new SetupException($"ip on the {which} host ({host.Description}) failed: {error}");
            _log.ShellFailed(which, error);
        }
        var script = string.Join('\n', lines.Select(l => l.Do)) + "\n";
        var res = await host.RunAsync("ip", ["-batch", "-"], script, ct).ConfigureAwait(false);
        if (!res.Succeeded)
            throw new SetupException($"ip on the {which} host ({host.Description}) failed: {res.FirstErrorLine.Replace("Command failed -:", "line")}");
        _log.Script(which, script.Replace('\n', ';'));
    }

    sealed class SetupException(string message) : Exception(message);
}
