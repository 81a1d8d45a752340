using BlockMigrate.TestSupport;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace BlockMigrate.Network.Tests;

/// <summary>
/// A client loop in the client namespace: every 100 ms resolve the name at the BIND primary (dig; the
/// record's TTL is 1 s and nothing caches), open a new connection to the answer, read "hello ADDR", close.
/// </summary>
internal sealed class ShortRequestClient : IAsyncDisposable
{
    public sealed record Request(TimeSpan At, string Resolved, string? ServedBy, string? Error);

    readonly string _ns;
    readonly string _name;
    readonly CancellationTokenSource _stop = new();
    readonly Stopwatch _clock;
    readonly List<Request> _requests = [];      // guarded by lock(_requests)
    Task? _loop;

    ShortRequestClient(string ns, string name, Stopwatch clock) { _ns = ns; _name = name; _clock = clock; }

    public static ShortRequestClient Start(string ns, string name, Stopwatch clock)
    {
        var c = new ShortRequestClient(ns, name, clock);
        c._loop = Task.Run(c.RunAsync);
        return c;
    }

    public IReadOnlyList<Request> Requests { get { lock (_requests) return [.. _requests]; } }

    async Task RunAsync()
    {
        var dig = CommandPrefixRunner.InNamespace(_ns);
        while (!_stop.IsCancellationRequested)
        {
            var at = _clock.Elapsed;
            string resolved = "";
            string? served = null, error = null;
            try
            {
                var r = await dig.RunAsync("dig", ["+short", "+norecurse", "+time=1", "+tries=2", "-p", Bind9Server.Port.ToString(),
                    "@127.0.0.1", _name, "A"], null, _stop.Token);
                resolved = r.StandardOutput.Trim();
                if (!IPAddress.TryParse(resolved, out var ip)) throw new IOException($"dig gave '{resolved}' ({r.FirstErrorLine})");
                using var s = NetnsSocket.Tcp(_ns);
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                timeout.CancelAfter(TimeSpan.FromSeconds(5));
                await s.ConnectAsync(new IPEndPoint(ip, VmServices.HelloPort), timeout.Token);
                var buf = new byte[256];
                int got = 0, n;
                while ((n = await s.ReceiveAsync(buf.AsMemory(got), SocketFlags.None, timeout.Token)) > 0) got += n;
                var line = Encoding.ASCII.GetString(buf, 0, got).Trim();
                if (!line.StartsWith("hello ", StringComparison.Ordinal)) throw new IOException($"got '{line}'");
                served = line["hello ".Length..];
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested) { return; }
            catch (Exception ex) { error = ex.Message; }
            lock (_requests) _requests.Add(new Request(at, resolved, served, error));
            try { await Task.Delay(100, _stop.Token); } catch (OperationCanceledException) { return; }
        }
    }

    /// <summary>Stops the loop (idempotent).</summary>
    public async ValueTask DisposeAsync()
    {
        if (_loop is null) return;
        await _stop.CancelAsync();
        await _loop;
        _loop = null;
    }
}
