using System.Net.Sockets;
using System.Text;
using BlockMigrate.Protocol;

namespace BlockMigrate.Engine.Tests;

/// <summary>A hand-driven source speaking the plaintext protocol, to send a receiver frames no real source would.</summary>
public sealed class RawSource : IAsyncDisposable
{
    private readonly TcpClient _tcp;
    private ulong _next = 1;

    private RawSource(TcpClient tcp)
    {
        _tcp = tcp;
        Stream = tcp.GetStream();
        Reader = new FrameReader(Stream);
    }

    public NetworkStream Stream { get; }
    public FrameReader Reader { get; }

    public static async Task<RawSource> ConnectAsync(int port)
    {
        var tcp = new TcpClient();
        await tcp.ConnectAsync("127.0.0.1", port);
        var s = new RawSource(tcp);
        await s.Stream.WriteAsync("BMIG1RAW"u8.ToArray());
        var b = new byte[1];
        await s.Stream.ReadExactlyAsync(b);
        Assert.That((char)b[0], Is.EqualTo('Y'));
        return s;
    }

    /// <summary>Hello for one disk; returns the receiver's answer frame (Welcome or Error).</summary>
    public async Task<Frame> HelloAsync(string name, ulong size = 1 << 20, uint blockSize = 65536)
    {
        var hello = new HelloMessage(HelloMessage.CurrentVersion, [new DiskOffer(name, size, blockSize, new string('a', 32), false)]);
        await SendAsync(FrameType.Hello, ProtocolJson.Encode(hello, ProtocolJson.Default.HelloMessage));
        return await Reader.ReadRequiredAsync("welcome", CancellationToken.None);
    }

    /// <summary>A complete, valid frame with the next sequence number.</summary>
    public Task SendAsync(FrameType type, byte[] payload) => Stream.WriteAsync(Build(type, _next++, payload)).AsTask();

    public ulong NextSequence => _next;

    public static byte[] Build(FrameType type, ulong seq, byte[] payload)
    {
        var frame = new byte[FrameFormat.HeaderSize + payload.Length];
        payload.CopyTo(frame, FrameFormat.HeaderSize);
        FrameFormat.WriteHeader(frame, type, seq, payload);
        return frame;
    }

    public static byte[] DataPayload(ulong offset, byte[] data)
    {
        var p = new byte[DataHeader.Size + data.Length];
        new DataHeader(0, DataEncoding.Raw, offset, (ulong)data.Length).Write(p);
        data.CopyTo(p, DataHeader.Size);
        return p;
    }

    /// <summary>The receiver's Error frame text (or "(closed)" if it just closed).</summary>
    public async Task<string> ErrorAsync()
    {
        try
        {
            while (true)
            {
                var f = await Reader.ReadAsync(CancellationToken.None);
                if (f == null) return "(closed)";
                if (f.Type == FrameType.Error) return Encoding.UTF8.GetString(f.Payload);
            }
        }
        catch (IOException)
        {
            return "(reset)";
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Stream.DisposeAsync();
        _tcp.Dispose();
    }
}
