using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace BlockMigrate.Transport;

/// <summary>
/// An authenticated connection between a source and a receiver, ready for frames.
///
/// Opening: the source sends an 8-byte preamble saying whether it speaks TLS or plaintext; the receiver
/// answers one byte, 'Y', or 'N' followed by a line and closes (so a mode mismatch is a clear error on
/// both sides, not a TLS parse failure). With TLS (1.3 only), both sides present self-signed keys:
/// the source pins the receiver's fingerprint, the receiver checks the source's against its trusted
/// list. After the handshake the receiver sends 'A' once it has accepted the source's key; with TLS 1.3
/// the client would otherwise learn of a rejection only at its first read.
/// </summary>
public sealed class SecureChannel : IAsyncDisposable
{
    private static readonly byte[] PreambleTls = "BMIG1TLS"u8.ToArray();
    private static readonly byte[] PreamblePlain = "BMIG1RAW"u8.ToArray();

    private readonly TcpClient _tcp;

    private SecureChannel(TcpClient tcp, Stream stream, CountingStream counter, string peer)
    {
        _tcp = tcp;
        Stream = stream;
        Counter = counter;
        Peer = peer;
    }

    /// <summary>The stream frames go through (TLS or the raw socket).</summary>
    public Stream Stream { get; }
    /// <summary>Counts the bytes on the socket, TLS records included.</summary>
    public CountingStream Counter { get; }
    /// <summary>The peer's key fingerprint, or "plaintext:ADDRESS".</summary>
    public string Peer { get; }

    public static async Task<SecureChannel> ConnectAsync(string host, int port, NodeKey? key, string? pinnedFingerprint,
        bool plaintext, CancellationToken cancellationToken)
    {
        var tcp = new TcpClient { NoDelay = true, SendBufferSize = 4 << 20, ReceiveBufferSize = 4 << 20 };
        // closing the socket ends any call of the opening, whether or not it watches the token (a silent receiver)
        using var abort = cancellationToken.Register(tcp.Dispose);
        try
        {
            try
            {
                await tcp.ConnectAsync(host, port, cancellationToken);
            }
            catch (SocketException e)
            {
                throw new TransportException($"cannot connect to receiver {host}:{port}: {e.Message}");
            }
            var counter = new CountingStream(tcp.GetStream());
            await counter.WriteAsync(plaintext ? PreamblePlain : PreambleTls, cancellationToken);
            await ExpectAsync(counter, (byte)'Y', $"receiver {host}:{port}", cancellationToken);
            if (plaintext) return new SecureChannel(tcp, counter, counter, $"plaintext:{host}:{port}");

            if (key == null) throw new TransportException("a key is needed for TLS (--key FILE; make one with 'blockmigrate keygen')");
            if (pinnedFingerprint == null) throw new TransportException($"no pinned key for receiver {host}:{port} (--peer-fingerprint or --known-hosts)");
            string? seen = null;
            var ssl = new SslStream(counter, leaveInnerStreamOpen: false);
            var options = new SslClientAuthenticationOptions
            {
                TargetHost = "blockmigrate",
                EnabledSslProtocols = SslProtocols.Tls13,
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                ClientCertificates = new X509CertificateCollection { key.Certificate },
                LocalCertificateSelectionCallback = (_, _, _, _, _) => key.Certificate,
                RemoteCertificateValidationCallback = (_, cert, _, _) =>
                {
                    seen = cert == null ? null : KeyFingerprint.Of(cert);
                    return seen == pinnedFingerprint;
                },
            };
            try
            {
                await ssl.AuthenticateAsClientAsync(options, cancellationToken);
            }
            catch (AuthenticationException e)
            {
                await ssl.DisposeAsync();
                if (seen != null && seen != pinnedFingerprint)
                    throw new PeerRejectedException($"receiver {host}:{port} presented key {seen}, not the pinned {pinnedFingerprint}; refusing to send (wrong host, or its key changed)");
                throw new PeerRejectedException($"TLS handshake with receiver {host}:{port} failed: {e.Message}");
            }
            try
            {
                await ExpectAsync(ssl, (byte)'A', $"receiver {host}:{port}", cancellationToken);
            }
            catch (Exception e) when (e is IOException or AuthenticationException or TransportException)
            {
                await ssl.DisposeAsync();
                throw new PeerRejectedException($"receiver {host}:{port} refused our key {key.Fingerprint}; add it to the receiver's trusted file");
            }
            return new SecureChannel(tcp, ssl, counter, pinnedFingerprint);
        }
        catch
        {
            tcp.Dispose();
            throw;
        }
    }

    /// <summary>Receiver side of the opening. Throws <see cref="PeerRejectedException"/> naming the refused key.</summary>
    public static async Task<SecureChannel> AcceptAsync(TcpClient tcp, NodeKey? key, TrustList? trusted, bool plaintext,
        CancellationToken cancellationToken)
    {
        tcp.NoDelay = true;
        tcp.ReceiveBufferSize = 4 << 20;
        var counter = new CountingStream(tcp.GetStream());
        var endpoint = tcp.Client.RemoteEndPoint?.ToString() ?? "?";
        var preamble = new byte[8];
        var got = await counter.ReadAtLeastAsync(preamble, 8, throwOnEndOfStream: false, cancellationToken);
        var wantsTls = got == 8 && preamble.AsSpan().SequenceEqual(PreambleTls);
        var wantsPlain = got == 8 && preamble.AsSpan().SequenceEqual(PreamblePlain);
        if (!wantsTls && !wantsPlain)
            throw new PeerRejectedException($"connection from {endpoint} is not a BlockMigrate source (bad preamble)");
        if (wantsPlain != plaintext)
        {
            var why = plaintext
                ? "this receiver runs with --plaintext; the source must use --plaintext too"
                : "this receiver requires TLS; the source used --plaintext";
            await counter.WriteAsync(Encoding.UTF8.GetBytes("N" + why + "\n"), cancellationToken);
            throw new PeerRejectedException($"refused {endpoint}: {(plaintext ? "it wants TLS" : "it wants plaintext")} ({why})");
        }
        await counter.WriteAsync("Y"u8.ToArray(), cancellationToken);
        if (plaintext) return new SecureChannel(tcp, counter, counter, $"plaintext:{endpoint}");

        string? seen = null;
        var ssl = new SslStream(counter, leaveInnerStreamOpen: false);
        var options = new SslServerAuthenticationOptions
        {
            ServerCertificate = key!.Certificate,
            EnabledSslProtocols = SslProtocols.Tls13,
            ClientCertificateRequired = true,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            RemoteCertificateValidationCallback = (_, cert, _, _) =>
            {
                seen = cert == null ? "(none)" : KeyFingerprint.Of(cert);
                return cert != null && trusted!.Contains(seen);
            },
        };
        try
        {
            await ssl.AuthenticateAsServerAsync(options, cancellationToken);
        }
        catch (Exception e) when (e is AuthenticationException or IOException)
        {
            await ssl.DisposeAsync();
            if (seen == "(none)") throw new PeerRejectedException($"refused {endpoint}: it presented no key");
            if (seen != null) throw new PeerRejectedException($"refused {endpoint}: its key {seen} is not in the trusted file");
            throw new PeerRejectedException($"TLS handshake with {endpoint} failed: {e.Message} (does the source pin our key?)");
        }
        await ssl.WriteAsync("A"u8.ToArray(), cancellationToken);
        await ssl.FlushAsync(cancellationToken);
        return new SecureChannel(tcp, ssl, counter, seen!);
    }

    private static Task? s_warmUp;

    /// <summary>
    /// Loads, in the background and once per process, the system trust store .NET reads on the first TLS handshake:
    /// SslStream builds an X509 chain of each side's own certificate (and of the peer's) before our fingerprint
    /// check, and the first chain build of a process reads OpenSSL's whole CA bundle and /etc/ssl/certs (147 files
    /// here: ~100 ms on each side, strace of a loopback migrate). We trust no CA — peers are pinned by fingerprint —
    /// but cannot stop .NET reading them; started when the process knows it will use TLS (the receiver at start, the
    /// source when its migration is made), the read overlaps the rest of the start-up instead of the handshake.
    /// Best effort: a failure here is the handshake's to report, as before.
    /// </summary>
    public static void WarmUpTrustStore()
    {
        if (Volatile.Read(ref s_warmUp) != null) return;
        var load = new Task(() =>
        {
            try
            {
                using var store = new X509Store(StoreName.Root, StoreLocation.LocalMachine);
                store.Open(OpenFlags.ReadOnly);
                _ = store.Certificates.Count;
            }
            catch (CryptographicException)
            {
            }
        });
        if (Interlocked.CompareExchange(ref s_warmUp, load, null) == null) load.Start(TaskScheduler.Default);
    }

    private static async Task ExpectAsync(Stream s, byte expected, string who, CancellationToken cancellationToken)
    {
        var b = new byte[1];
        if (await s.ReadAtLeastAsync(b, 1, throwOnEndOfStream: false, cancellationToken) == 0)
            throw new TransportException($"{who} closed the connection during the opening");
        if (b[0] == expected) return;
        if (b[0] == 'N')
        {
            var line = new byte[256];
            var n = await s.ReadAtLeastAsync(line, line.Length, throwOnEndOfStream: false, cancellationToken);
            throw new PeerRejectedException($"{who} refused the connection: {Protocol.PeerText.Clean(line.AsSpan(0, n))}");
        }
        throw new TransportException($"{who} answered the opening with an unexpected byte 0x{b[0]:x2}");
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await Stream.DisposeAsync();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException) { }
        _tcp.Dispose();
    }
}
