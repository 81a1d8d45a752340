using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace BlockMigrate.Hypervisors.Qemu;

/// <summary>
/// A client of the QEMU Machine Protocol (QMP) over a unix socket or TCP.
///
/// QMP is line-delimited JSON. The server speaks first (a greeting with its version); the client
/// must send <c>qmp_capabilities</c> before anything else. Every command we send carries an
/// <c>id</c> that the reply echoes, so replies are matched to commands even though asynchronous
/// events (<c>{"event": ..., "timestamp": ...}</c>) arrive interleaved with them. One reader loop
/// owns the socket's input: it completes the pending command with that id, or hands the event to
/// every subscription. Writes are serialised by a lock. JSON goes through JsonNode only, which
/// needs no reflection (the assembly is AOT-compatible).
///
/// A QEMU monitor serves one client at a time: a second connection to the same socket waits until
/// the first closes. Give QEMU one <c>-qmp</c> socket per client.
/// </summary>
public sealed class QmpClient : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly ConcurrentDictionary<long, Pending> _pending = new();
    private readonly List<QmpEventSubscription> _subscriptions = []; // guarded by itself
    private readonly CancellationTokenSource _closing = new();
    private Task _readLoop = Task.CompletedTask;
    private long _nextId;
    private volatile Exception? _closedBecause;

    private sealed record Pending(string Command, TaskCompletionSource<JsonNode?> Reply);

    private QmpClient(Socket socket, string address)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        Address = address;
    }

    /// <summary>Where this client is connected: a socket path or <c>tcp:HOST:PORT</c>.</summary>
    public string Address { get; }

    /// <summary>The <c>QMP</c> member of the greeting: <c>version</c> and <c>capabilities</c>.</summary>
    public JsonObject Greeting { get; private set; } = new();

    /// <summary>QEMU's version as major.minor.micro, from the greeting.</summary>
    public Version QemuVersion
    {
        get
        {
            var q = Greeting["version"]?["qemu"];
            return new Version((int?)q?["major"] ?? 0, (int?)q?["minor"] ?? 0, (int?)q?["micro"] ?? 0);
        }
    }

    /// <summary>True until the connection fails or is disposed.</summary>
    public bool IsConnected => _closedBecause == null;

    /// <summary>
    /// Connects to <paramref name="address"/> (<c>/path</c>, <c>unix:/path</c> or <c>tcp:HOST:PORT</c>),
    /// reads the greeting and negotiates capabilities. A socket that does not exist yet or refuses the
    /// connection is retried until <paramref name="retryFor"/> has passed (QEMU may still be starting).
    /// </summary>
    public static async Task<QmpClient> ConnectAsync(string address, TimeSpan retryFor, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + retryFor;
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Socket socket;
            EndPoint endpoint;
            try
            {
                (socket, endpoint) = Endpoint(address);
            }
            catch (FormatException e)
            {
                throw new QmpException("connect", "BadAddress", e.Message, e);
            }
            try
            {
                await socket.ConnectAsync(endpoint, cancellationToken);
            }
            catch (SocketException) when (DateTime.UtcNow < deadline)
            {
                socket.Dispose();
                await Task.Delay(50, cancellationToken);
                continue;
            }
            catch (SocketException e)
            {
                socket.Dispose();
                throw new QmpException("connect", QmpException.DisconnectedClass,
                    $"cannot connect to the QEMU monitor at {address}: {e.Message} (is QEMU running with -qmp {address},server=on,wait=off?)", e);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
            var client = new QmpClient(socket, address);
            try
            {
                await client.HandshakeAsync(cancellationToken);
                return client;
            }
            catch
            {
                await client.DisposeAsync();
                throw;
            }
        }
    }

    private static (Socket, EndPoint) Endpoint(string address)
    {
        if (address.StartsWith("tcp:", StringComparison.Ordinal))
        {
            var hostPort = address["tcp:".Length..];
            var colon = hostPort.LastIndexOf(':');
            if (colon <= 0 || !int.TryParse(hostPort[(colon + 1)..], out var port) || port is <= 0 or > 65535)
                throw new FormatException($"'{address}' is not tcp:HOST:PORT");
            var host = hostPort[..colon].Trim('[', ']');
            return (new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true }, new DnsEndPoint(host, port));
        }
        var path = address.StartsWith("unix:", StringComparison.Ordinal) ? address["unix:".Length..] : address;
        if (path.Length == 0)
            throw new FormatException("empty QMP socket path");
        return (new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified), new UnixDomainSocketEndPoint(path));
    }

    private async Task HandshakeAsync(CancellationToken cancellationToken)
    {
        var reader = new StreamReader(_stream, new UTF8Encoding(false), false, 64 * 1024, leaveOpen: true);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(30));
        string? line;
        try
        {
            line = await reader.ReadLineAsync(timeout.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new QmpException("connect", "NoGreeting",
                $"no QMP greeting from {Address} within 30 s (another client may hold this monitor: QEMU serves one at a time)");
        }
        var greeting = line == null ? null : ParseObject(line)?["QMP"] as JsonObject;
        if (greeting == null)
            throw new QmpException("connect", "NoGreeting", $"{Address} did not greet with QMP: {line ?? "(closed)"}");
        Greeting = greeting;
        _readLoop = Task.Run(() => ReadLoopAsync(reader));
        await ExecuteAsync("qmp_capabilities", null, cancellationToken);
    }

    /// <summary>
    /// Runs <paramref name="command"/> and returns its <c>return</c> member (often an empty object).
    /// A QMP error becomes a <see cref="QmpException"/> with QEMU's class and description.
    /// </summary>
    public async Task<JsonNode?> ExecuteAsync(string command, JsonObject? arguments = null, CancellationToken cancellationToken = default)
    {
        if (_closedBecause is { } closed)
            throw Disconnected(command, closed);
        var id = Interlocked.Increment(ref _nextId);
        var pending = new Pending(command, new TaskCompletionSource<JsonNode?>(TaskCreationOptions.RunContinuationsAsynchronously));
        _pending[id] = pending;
        var message = new JsonObject { ["execute"] = command, ["id"] = id };
        if (arguments != null)
            message["arguments"] = arguments.DeepClone();
        var bytes = Encoding.UTF8.GetBytes(message.ToJsonString() + "\n");
        try
        {
            await _writeLock.WaitAsync(cancellationToken);
            try
            {
                await _stream.WriteAsync(bytes, cancellationToken);
            }
            finally
            {
                _writeLock.Release();
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            _pending.TryRemove(id, out _);
            throw Disconnected(command, e);
        }
        catch
        {
            _pending.TryRemove(id, out _);
            throw;
        }
        // the reply may arrive after the caller gave up; the read loop then drops it
        using var registration = cancellationToken.Register(() =>
        {
            if (_pending.TryRemove(id, out var p))
                p.Reply.TrySetCanceled(cancellationToken);
        });
        return await pending.Reply.Task;
    }

    /// <summary>Like <see cref="ExecuteAsync"/>, with the result as an object (or an empty one).</summary>
    public async Task<JsonObject> ExecuteObjectAsync(string command, JsonObject? arguments = null, CancellationToken cancellationToken = default) =>
        await ExecuteAsync(command, arguments, cancellationToken) as JsonObject ?? new JsonObject();

    /// <summary>
    /// Starts collecting events (all, or only those named) from now on. Subscribe before the
    /// command that triggers them; dispose the subscription when done.
    /// </summary>
    public QmpEventSubscription Subscribe(params string[] names)
    {
        var sub = new QmpEventSubscription(names.Length == 0 ? null : names, Unsubscribe);
        lock (_subscriptions)
        {
            if (_closedBecause is { } closed)
                sub.Complete(Disconnected("subscribe", closed));
            else
                _subscriptions.Add(sub);
        }
        return sub;
    }

    private void Unsubscribe(QmpEventSubscription sub)
    {
        lock (_subscriptions)
            _subscriptions.Remove(sub);
    }

    private async Task ReadLoopAsync(StreamReader reader)
    {
        Exception why = new EndOfStreamException("QEMU closed the monitor connection");
        try
        {
            while (true)
            {
                var line = await reader.ReadLineAsync(_closing.Token);
                if (line == null)
                    break;
                if (line.Length == 0)
                    continue;
                var obj = ParseObject(line);
                if (obj == null)
                    continue;
                if (obj["event"] is JsonValue ev)
                    Dispatch(ToEvent(ev.GetValue<string>(), obj));
                else if (obj["id"] is JsonValue idValue && idValue.TryGetValue<long>(out var id) && _pending.TryRemove(id, out var p))
                    Complete(p, obj);
            }
        }
        catch (OperationCanceledException)
        {
            why = new ObjectDisposedException(nameof(QmpClient));
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            why = e;
        }
        _closedBecause = why;
        foreach (var id in _pending.Keys)
            if (_pending.TryRemove(id, out var p))
                p.Reply.TrySetException(Disconnected(p.Command, why));
        lock (_subscriptions)
        {
            foreach (var s in _subscriptions)
                s.Complete(Disconnected("read", why));
            _subscriptions.Clear();
        }
    }

    private static void Complete(Pending p, JsonObject reply)
    {
        if (reply["error"] is JsonObject error)
            p.Reply.TrySetException(new QmpException(p.Command,
                (string?)error["class"] ?? "GenericError", (string?)error["desc"] ?? error.ToJsonString()));
        else
            p.Reply.TrySetResult(reply["return"]?.DeepClone());
    }

    private void Dispatch(QmpEvent e)
    {
        lock (_subscriptions)
            foreach (var s in _subscriptions)
                s.Post(e);
    }

    private static QmpEvent ToEvent(string name, JsonObject obj)
    {
        var ts = obj["timestamp"];
        var seconds = (long?)ts?["seconds"] ?? 0;
        var micros = (long?)ts?["microseconds"] ?? 0;
        var when = seconds > 0
            ? DateTimeOffset.FromUnixTimeSeconds(seconds).AddTicks(micros * TimeSpan.TicksPerMicrosecond)
            : DateTimeOffset.UtcNow;
        return new QmpEvent(name, obj["data"]?.DeepClone() as JsonObject, when);
    }

    private static JsonObject? ParseObject(string line)
    {
        try
        {
            return JsonNode.Parse(line) as JsonObject;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private QmpException Disconnected(string command, Exception why) =>
        new(command, QmpException.DisconnectedClass, $"connection to {Address} lost: {why.Message}", why);

    public async ValueTask DisposeAsync()
    {
        _closing.Cancel();
        try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
        await _stream.DisposeAsync();
        try { await _readLoop; } catch (Exception) { /* the loop records why it ended */ }
        _closing.Dispose();
        _writeLock.Dispose();
    }
}
