using System.Net;
using System.Net.Sockets;
using BlockMigrate.Interop;
using BlockMigrate.Transport;

namespace BlockMigrate.Receiver;

/// <summary>
/// <c>blockmigrate receive</c>: listens, authenticates each source (TLS 1.3, the source's key must be in
/// the trusted file), and receives its disks into the image directory, one session per connection.
/// <see cref="Listening"/> is raised once the socket is bound (the readiness hook: sd_notify goes there).
/// </summary>
public sealed class Receiver(ReceiverOptions options)
{
    private readonly HashSet<string> _busy = [];

    /// <summary>Raised once, when the receiver accepts connections (the address has the real port when 0 was asked).</summary>
    public event Action<IPEndPoint>? Listening;

    /// <summary>One line per event worth logging.</summary>
    public event Action<string>? Log;

    /// <summary>Serves until cancelled, or (with <see cref="ReceiverOptions.Once"/>) one migration; returns 0 when that one committed.</summary>
    public async Task<int> RunAsync(CancellationToken ct)
    {
        if (!Directory.Exists(options.ImageDir)) throw new ReceiverException($"image directory {options.ImageDir} does not exist");
        NodeKey? key = null;
        TrustList? trusted = null;
        if (!options.Plaintext)
        {
            if (options.KeyPath == null) throw new TransportException("no key given (--key FILE); make one with 'blockmigrate keygen', or use --plaintext on both sides");
            if (options.TrustedPath == null) throw new TransportException("no trusted file given (--trusted FILE listing the sources' key fingerprints)");
            key = NodeKey.Load(options.KeyPath);
            trusted = TrustList.LoadTrusted(options.TrustedPath);
            if (trusted.Count == 0) Say($"warning: {options.TrustedPath} lists no keys; every source will be refused");
        }
        using var dir = SparseFile.OpenDirectory(options.ImageDir);
        var listener = new TcpListener(options.Listen);
        try
        {
            listener.Start();
        }
        catch (SocketException e)
        {
            throw new TransportException($"cannot listen on {options.Listen}: {e.Message}");
        }
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
                    tcp = await listener.AcceptTcpClientAsync(ct);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
                var session = ServeAsync(tcp, key, trusted, dir, ct);
                if (options.Once)
                {
                    var outcome = await session;
                    if (outcome == null) continue; // refused before a migration began: keep waiting
                    return outcome.Value ? 0 : 1;
                }
                sessions.RemoveAll(t => t.IsCompleted);
                sessions.Add(session);
            }
            await Task.WhenAll(sessions);
            return 0;
        }
        finally
        {
            listener.Stop();
            key?.Dispose();
        }
    }

    /// <summary>null: refused at authentication; true: committed; false: failed or abandoned.</summary>
    private async Task<bool?> ServeAsync(TcpClient tcp, NodeKey? key, TrustList? trusted, Microsoft.Win32.SafeHandles.SafeFileHandle dir, CancellationToken ct)
    {
        SecureChannel channel;
        try
        {
            using var handshake = CancellationTokenSource.CreateLinkedTokenSource(ct);
            handshake.CancelAfter(TimeSpan.FromSeconds(20));
            channel = await SecureChannel.AcceptAsync(tcp, key, trusted, options.Plaintext, handshake.Token);
        }
        catch (Exception e) when (e is BlockMigrateException or IOException or OperationCanceledException or SocketException)
        {
            Say(e is OperationCanceledException ? $"refused {tcp.Client.RemoteEndPoint}: no handshake within 20 s" : e.Message);
            tcp.Dispose();
            return null;
        }
        await using (channel)
        {
            Say($"source {channel.Peer} connected");
            return await new ReceiverSession(channel, options, dir, _busy, Say).RunAsync(ct);
        }
    }

    private void Say(string line) => Log?.Invoke(line);
}
