using System.Net;
using System.Net.Sockets;
using BlockMigrate.Interop;
using BlockMigrate.Protocol;
using BlockMigrate.Transport;
using BlockMigrate.Logging;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace BlockMigrate.Receiver;

/// <summary>
/// <c>blockmigrate receive</c>: listens, authenticates each source (TLS 1.3, the source's key must be in
/// the trusted file), and receives its disks into the image directory, one session per connection.
/// <see cref="Listening"/> is raised once the socket is bound (the readiness hook: sd_notify goes there).
/// <para>
/// Before authentication a connection is anyone's, so it gets little: openings run concurrently (a
/// silent connection delays nobody), each must authenticate within
/// <see cref="ReceiverOptions.HandshakeTimeout"/>, and at most
/// <see cref="ReceiverOptions.MaxPendingHandshakes"/> may be in their opening at once; one more is
/// closed at once. With <see cref="ReceiverOptions.Once"/>, only an authenticated source's migration
/// ends the receiver; a connection refused before that does not.
/// </para>
/// </summary>
public sealed class ReceiverServer(ReceiverOptions options, ILogger? logger = null)
{
    private readonly BusySet _busy = new();
    private int _pending;          // connections in their opening (Interlocked)
    private int _onceClaimed;      // --once: 1 once an authenticated session has taken the one migration (Interlocked)
    private volatile int _onceOutcome = -1; // --once: 1 committed, 0 not, -1 none yet
    private long _lastCapLog;      // TickCount64 of the last "too many openings" line
    private int _capRefusedQuiet;  // refusals since that line (Interlocked)

    /// <summary>Raised once, when the receiver accepts connections (the address has the real port when 0 was asked).</summary>
    public event Action<IPEndPoint>? Listening;

    private readonly ILogger _log = logger ?? NullLogger.Instance; // one line per event worth logging

    /// <summary>Serves until cancelled, or (with <see cref="ReceiverOptions.Once"/>) one migration; returns 0 when that one committed.</summary>
    public async Task<int> RunAsync(CancellationToken ct)
    {
        if (!Directory.Exists(options.ImageDir)) throw new ReceiverException($"image directory {options.ImageDir} does not exist");
        if (options.HandshakeTimeout <= TimeSpan.Zero) throw new ReceiverException("the handshake timeout must be positive");
        if (options.MaxPendingHandshakes < 1) throw new ReceiverException("the cap on pending handshakes must be at least 1");
        NodeKey? key = null;
        TrustList? trusted = null;
        if (!options.Plaintext)
        {
            if (options.KeyPath == null) throw new TransportException("no key given (--key FILE); make one with 'blockmigrate keygen', or use --plaintext on both sides");
            if (options.TrustedPath == null) throw new TransportException("no trusted file given (--trusted FILE listing the sources' key fingerprints)");
            key = NodeKey.Load(options.KeyPath);
            SecureChannel.WarmUpTrustStore(); // off the first handshake's path (~100 ms)
            trusted = TrustList.LoadTrusted(options.TrustedPath);
            if (trusted.Count == 0) Warn($"{options.TrustedPath} lists no keys; every source will be refused");
        }
        SeedStore.Check(options, _log); // a named seed that cannot be used: one line, not started
        using var dir = SparseFile.OpenDirectory(options.ImageDir);
        var listener = new TcpListener(options.Listen);
        // "[::]" means every address, IPv4 too (receiver.conf's default): .NET opens IPv6 sockets
        // with IPV6_V6ONLY, so without this the shipped configuration refused every IPv4 source
        if (options.Listen.Address.Equals(IPAddress.IPv6Any)) listener.Server.DualMode = true;
        try
        {
            listener.Start();
        }
        catch (SocketException e)
        {
            throw new TransportException($"cannot listen on {options.Listen}: {e.Message}");
        }
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct); // cancelled at the end of --once's migration too
        try
        {
            var bound = (IPEndPoint)listener.LocalEndpoint;
            Say($"listening on {bound} ({(options.Plaintext ? "PLAINTEXT" : "TLS 1.3, key " + key!.Fingerprint)}), images in {options.ImageDir}");
            Listening?.Invoke(bound);
            var sessions = new List<Task>();
            while (true)
            {
                TcpClient tcp;
                try
                {
                    tcp = await listener.AcceptTcpClientAsync(stop.Token);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
                catch (SocketException e)
                {
                    // e.g. out of descriptors: say so, let sessions end, try again
                    Warn($"accepting a connection failed: {e.Message}");
                    try
                    {
                        await Task.Delay(100, stop.Token);
                    }
                    catch (OperationCanceledException)
                    {
                        break;
                    }
                    continue;
                }
                if (Interlocked.Increment(ref _pending) > options.MaxPendingHandshakes)
                {
                    Interlocked.Decrement(ref _pending);
                    RefuseOverCap(tcp);
                    continue;
                }
                sessions.RemoveAll(t => t.IsCompleted);
                sessions.Add(ServeAsync(tcp, key, trusted, dir, stop));
            }
            await Task.WhenAll(sessions);
            return _onceOutcome == 0 ? 1 : 0;
        }
        finally
        {
            listener.Stop();
            key?.Dispose();
        }
    }

    /// <summary>Closes a connection over the cap at once; one log line a second at most (a flood must not flood the log).</summary>
    private void RefuseOverCap(TcpClient tcp)
    {
        var from = EndpointOf(tcp);
        tcp.Dispose();
        var now = Environment.TickCount64;
        var last = Interlocked.Read(ref _lastCapLog);
        if (now - last < 1000 || Interlocked.CompareExchange(ref _lastCapLog, now, last) != last)
        {
            Interlocked.Increment(ref _capRefusedQuiet);
            return;
        }
        var quiet = Interlocked.Exchange(ref _capRefusedQuiet, 0);
        Say($"refused {from}: {options.MaxPendingHandshakes} connections are already in their opening (max-pending-handshakes)" +
            (quiet > 0 ? $"; {quiet} more refused since the last such line" : ""));
    }

    private async Task ServeAsync(TcpClient tcp, NodeKey? key, TrustList? trusted, Microsoft.Win32.SafeHandles.SafeFileHandle dir, CancellationTokenSource stop)
    {
        var ct = stop.Token;
        var from = EndpointOf(tcp);
        SecureChannel? channel = null;
        try
        {
            using var opening = CancellationTokenSource.CreateLinkedTokenSource(ct);
            opening.CancelAfter(options.HandshakeTimeout);
            // closing the socket ends any call of the opening, whether or not it watches the token
            var abort = opening.Token.Register(tcp.Dispose);
            try
            {
                channel = await SecureChannel.AcceptAsync(tcp, key, trusted, options.Plaintext, opening.Token);
            }
            catch (Exception e)
            {
                if (!ct.IsCancellationRequested)
                    Say(opening.IsCancellationRequested ? $"refused {from}: not authenticated within {options.HandshakeTimeout.TotalSeconds:0.#} s"
                        : e is BlockMigrateException ? e.Message
                        : $"refused {from}: {e.GetType().Name}: {PeerText.Clean(e.Message)}");
            }
            finally
            {
                await abort.DisposeAsync();
                Interlocked.Decrement(ref _pending);
            }
            if (channel != null && opening.IsCancellationRequested)
            {
                // authenticated just as the time ran out, and the socket may be closed already
                if (!ct.IsCancellationRequested) Say($"refused {from}: not authenticated within {options.HandshakeTimeout.TotalSeconds:0.#} s");
                await channel.DisposeAsync();
                channel = null;
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            Say($"refused {from}: internal error: {e.GetType().Name}: {PeerText.Clean(e.Message)}");
        }
        if (channel == null)
        {
            tcp.Dispose();
            return;
        }
        await using (channel)
        {
            if (options.Once && Interlocked.CompareExchange(ref _onceClaimed, 1, 0) != 0)
            {
                Say($"refused source {channel.Peer}: this receiver (--once) serves one migration, and has one");
                await RefuseBusyAsync(channel, ct);
                return;
            }
            Say($"source {channel.Peer} connected");
            var committed = false;
            try
            {
                committed = await new ReceiverSession(channel, options, dir, _busy, _log).RunAsync(ct);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Say($"migration from {channel.Peer} failed: internal error: {e.GetType().Name}: {PeerText.Clean(e.Message)}");
            }
            if (options.Once)
            {
                _onceOutcome = committed ? 1 : 0;
                await stop.CancelAsync(); // the one migration is over: stop accepting, end the openings under way
            }
        }
    }

    /// <summary>Reads the source's Hello (so closing does not reset the connection before it reads our answer), answers with an Error frame.</summary>
    private static async Task RefuseBusyAsync(SecureChannel channel, CancellationToken ct)
    {
        try
        {
            using var t = CancellationTokenSource.CreateLinkedTokenSource(ct);
            t.CancelAfter(TimeSpan.FromSeconds(5));
            (await new FrameReader(channel.Stream).ReadAsync(t.Token))?.Dispose();
            await new FrameWriter(channel.Stream).WriteAsync(FrameType.Error,
                "the receiver (--once) serves one migration and is busy with another"u8.ToArray(), default, t.Token);
        }
        catch (Exception e) when (e is BlockMigrateException or IOException or OperationCanceledException or ObjectDisposedException) { }
    }

    private static string EndpointOf(TcpClient tcp)
    {
        try
        {
            return tcp.Client.RemoteEndPoint?.ToString() ?? "?";
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            return "?";
        }
    }

    private void Say(string line) => _log.Line(line);

    private void Warn(string line) => _log.Warning(line);
}
