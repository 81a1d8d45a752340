using System.Net;
using System.Net.Sockets;
using System.Text;

namespace BlockMigrate.Network.Tests;

/// <summary>
/// What the "VM" serves, on sockets created in its namespace: an echo service on 7000 (for the
/// long-lived connection) and on 8080 one line "hello LOCALADDR" then close (for short requests:
/// the client learns which of the VM's addresses it reached).
/// </summary>
internal sealed class VmServices : IAsyncDisposable
{
    public const int EchoPort = 7000;
    public const int HelloPort = 8080;
    readonly CancellationTokenSource _stop = new();
    readonly List<Socket> _listeners = [];
    readonly List<Task> _loops = [];

    public static VmServices Start(string ns)
    {
        var s = new VmServices();
        s.Listen(ns, EchoPort, EchoAsync);
        s.Listen(ns, HelloPort, HelloAsync);
        return s;
    }

    void Listen(string ns, int port, Func<Socket, CancellationToken, Task> serve)
    {
        var l = NetnsSocket.Tcp(ns);
        l.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        l.Bind(new IPEndPoint(IPAddress.Any, port));
        l.Listen(64);
        _listeners.Add(l);
        _loops.Add(Task.Run(async () =>
        {
            while (!_stop.IsCancellationRequested)
            {
                Socket c;
                try { c = await l.AcceptAsync(_stop.Token); }
                catch (Exception) { return; }
                _ = Task.Run(async () =>
                {
                    using (c)
                    {
                        try { await serve(c, _stop.Token); }
                        catch (Exception) { /* the client's problem shows on the client side */ }
                    }
                });
            }
        }));
    }

    static async Task EchoAsync(Socket c, CancellationToken ct)
    {
        var buf = new byte[65536];
        while (true)
        {
            int n = await c.ReceiveAsync(buf, ct);
            if (n == 0) { c.Shutdown(SocketShutdown.Send); return; }
            int sent = 0;
            while (sent < n) sent += await c.SendAsync(buf.AsMemory(sent, n - sent), ct);
        }
    }

    static async Task HelloAsync(Socket c, CancellationToken ct)
    {
        var local = ((IPEndPoint)c.LocalEndPoint!).Address;
        await c.SendAsync(Encoding.ASCII.GetBytes($"hello {local}\n"), ct);
        c.Shutdown(SocketShutdown.Send);
        var buf = new byte[16];
        while (await c.ReceiveAsync(buf, ct) > 0) { }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        foreach (var l in _listeners) l.Dispose();
        await Task.WhenAll(_loops);
        _stop.Dispose();
    }
}
