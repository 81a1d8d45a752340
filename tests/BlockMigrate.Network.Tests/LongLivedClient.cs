using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace BlockMigrate.Network.Tests;

/// <summary>
/// One TCP connection from the client namespace to the VM's echo service, exchanging a message every
/// 20 ms and checking each echo byte for byte; every 25th message is 20000 bytes (more than the tunnel's
/// MTU). It records each exchange's time, and the first error, if any.
/// </summary>
internal sealed class LongLivedClient : IAsyncDisposable
{
    readonly Socket _socket;
    readonly CancellationTokenSource _stop = new();
    readonly Stopwatch _clock;
    readonly List<TimeSpan> _exchanges = [];      // guarded by lock(_exchanges)
    Task? _loop;

    public Exception? Error { get; private set; }

    LongLivedClient(Socket s, Stopwatch clock) { _socket = s; _clock = clock; }

    public static async Task<LongLivedClient> ConnectAsync(string ns, IPAddress address, Stopwatch clock, CancellationToken ct)
    {
        var s = NetnsSocket.Tcp(ns);
        await s.ConnectAsync(new IPEndPoint(address, VmServices.EchoPort), ct);
        var c = new LongLivedClient(s, clock);
        c._loop = Task.Run(c.RunAsync);
        return c;
    }

    public int ExchangesSince(TimeSpan t) { lock (_exchanges) return _exchanges.Count(x => x > t); }

    public TimeSpan LongestGap
    {
        get
        {
            lock (_exchanges)
                return _exchanges.Zip(_exchanges.Skip(1), (a, b) => b - a).DefaultIfEmpty().Max();
        }
    }

    async Task RunAsync()
    {
        var rnd = new Random(42);
        var back = new byte[20000];
        try
        {
            for (int i = 0; !_stop.IsCancellationRequested; i++)
            {
                var msg = new byte[i % 25 == 24 ? 20000 : 64];
                rnd.NextBytes(msg);
                await _socket.SendAsync(msg, SocketFlags.None, _stop.Token);
                int got = 0;
                while (got < msg.Length)
                {
                    int n = await _socket.ReceiveAsync(back.AsMemory(got, msg.Length - got), SocketFlags.None, _stop.Token);
                    if (n == 0) throw new IOException("the server closed the connection");
                    got += n;
                }
                if (!back.AsSpan(0, msg.Length).SequenceEqual(msg)) throw new IOException($"echo {i} differs");
                lock (_exchanges) _exchanges.Add(_clock.Elapsed);
                await Task.Delay(20, _stop.Token);
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested) { }
        catch (Exception ex) { Error = ex; }
    }

    /// <summary>Stops exchanging and closes the connection cleanly: FIN, wait for the server's FIN.</summary>
    public async Task CloseAsync(CancellationToken ct)
    {
        await _stop.CancelAsync();
        if (_loop is not null) await _loop;
        _socket.Shutdown(SocketShutdown.Send);
        var buf = new byte[65536];
        while (await _socket.ReceiveAsync(buf, SocketFlags.None, ct) > 0) { }
        _socket.Close();
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        if (_loop is not null) await _loop;
        _socket.Dispose();
        _stop.Dispose();
    }
}
