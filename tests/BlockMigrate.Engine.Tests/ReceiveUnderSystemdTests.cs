using System.Net.Sockets;
using System.Text;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary><c>blockmigrate receive</c> as systemd runs it (Type=notify): READY=1 with the address once it
/// listens, log lines through NLog, STOPPING=1 and exit 0 on SIGTERM.</summary>
[CancelAfter(60_000)]
public sealed class ReceiveUnderSystemdTests
{
    [Test]
    public async Task Receiver_notifies_ready_and_stops_cleanly_on_SIGTERM()
    {
        using var dir = new TempDir("notify");
        Directory.CreateDirectory(dir["images"]);
        var socketPath = dir["notify.sock"];
        using var notify = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        notify.Bind(new UnixDomainSocketEndPoint(socketPath));
        using var receiver = BackgroundProcess.Cli(new Dictionary<string, string> { ["NOTIFY_SOCKET"] = socketPath },
            "receive", "--listen", "127.0.0.1:0", "--image-dir", dir["images"], "--plaintext");

        var listening = await receiver.WaitForLineAsync(@"^listening on (\S+)$", TimeSpan.FromSeconds(30));
        var ready = await Receive(notify);
        Assert.That(ready, Is.EqualTo($"READY=1\nSTATUS=listening on {listening.Groups[1].Value}"));

        receiver.Stop(TimeSpan.FromSeconds(20));

        Assert.That(receiver.ExitCode, Is.Zero, receiver.Stderr);
        Assert.That(await Receive(notify), Is.EqualTo("STOPPING=1"), receiver.Stderr);
        // stderr is a pipe here: NLog's plain layout (timestamp, level, logger), not Console.Error lines
        Assert.That(receiver.Stderr, Does.Match(@"(?m)^\d{4}-\d\d-\d\dT[\d:.]+Z INFO  receive: listening on "));
        Assert.That(receiver.Stderr, Does.Contain("INFO  receive: stopping (signal)"));
    }

    private static async Task<string> Receive(Socket socket)
    {
        var buffer = new byte[4096];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
        return Encoding.UTF8.GetString(buffer, 0, n);
    }
}
