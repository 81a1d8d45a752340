using System.Net;
using System.Net.Sockets;
using BlockMigrate.Protocol;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// Before authentication a connection is anyone's: openings run concurrently, each has a short time to
/// authenticate, their number is capped, and only an authenticated source's migration ends a --once
/// receiver. The source, for its part, gives up on a receiver that connects and then stays silent.
/// </summary>
[CancelAfter(180_000)]
public class PreAuthTests
{
    [Test]
    public async Task Silent_connection_does_not_delay_a_once_migration()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, 8L << 20, 1 << 20);
        // a long pre-auth timeout: the migration must not wait for the silent connection to be dropped
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys, "--handshake-timeout", "120");
        using var silent = new TcpClient();
        await silent.ConnectAsync(IPAddress.Loopback, receiver.Port);
        using (var garbage = new TcpClient())
        {
            // refused at the opening: must not use up --once
            await garbage.ConnectAsync(IPAddress.Loopback, receiver.Port);
            await garbage.GetStream().WriteAsync("GET / HTTP/1.1\r\n\r\n"u8.ToArray());
            await receiver.Process.WaitForStderrLineAsync("bad preamble", TimeSpan.FromSeconds(30));
        }

        var run = await MigrateRun.RunAsync(source, receiver.Address, keys);

        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.Zero, receiver.Process.Stderr);
        var log = receiver.Process.Stderr;
        Assert.That(log, Does.Contain("committed vda"));
        // the receiver said nothing of the silent connection (no refusal, no timeout) before the commit:
        // the migration finished while it was still in its opening
        var silentPort = ((IPEndPoint)silent.Client.LocalEndPoint!).Port;
        Assert.That(log[..log.IndexOf("committed vda", StringComparison.Ordinal)], Does.Not.Contain($":{silentPort}"));
        Assert.That(log, Does.Not.Contain("not authenticated within"));
        Assert.That(source.Hash(), Is.EqualTo(Sha256(receiver.Image("vda"))));
    }

    [Test]
    public async Task Connections_over_the_cap_are_closed_at_once()
    {
        using var dir = new TempDir("engine");
        using var receiver = await ReceiverProcess.StartServiceAsync(dir["dst"], keys: null, "--max-pending-handshakes", "4", "--handshake-timeout", "120");
        var idle = new List<TcpClient>();
        try
        {
            for (var i = 0; i < 4; i++)
            {
                var c = new TcpClient();
                await c.ConnectAsync(IPAddress.Loopback, receiver.Port);
                idle.Add(c);
            }
            for (var i = 0; i < 3; i++)
            {
                using var extra = new TcpClient();
                await extra.ConnectAsync(IPAddress.Loopback, receiver.Port);
                Assert.That(await ClosedByPeerAsync(extra, TimeSpan.FromSeconds(30)), Is.True, $"connection {5 + i} over the cap of 4 was closed");
            }
            await receiver.Process.WaitForStderrLineAsync("connections are already in their opening", TimeSpan.FromSeconds(10));
            foreach (var c in idle)
                Assert.That(c.Client.Poll(0, SelectMode.SelectRead), Is.False, "the 4 within the cap are still open");
        }
        finally
        {
            foreach (var c in idle) c.Dispose();
        }
        // their places are free again: a source gets in
        Frame? answer = null;
        for (var attempt = 0; attempt < 100 && answer == null; attempt++)
        {
            try
            {
                await using var source = await RawSource.ConnectAsync(receiver.Port);
                answer = await source.HelloAsync("vda");
            }
            catch (Exception e) when (e is IOException or SocketException or AssertionException)
            {
                await Task.Delay(100);
            }
        }
        Assert.That(answer?.Type, Is.EqualTo(FrameType.Welcome), receiver.Process.Stderr);
        Assert.That(receiver.Process.HasExited, Is.False);
    }

    [Test]
    public async Task Connection_that_does_not_authenticate_in_time_is_closed()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys, "--handshake-timeout", "1");
        using var silent = new TcpClient();
        await silent.ConnectAsync(IPAddress.Loopback, receiver.Port);
        Assert.That(await ClosedByPeerAsync(silent, TimeSpan.FromSeconds(60)), Is.True);
        await receiver.Process.WaitForStderrLineAsync(@"refused 127\.0\.0\.1:\d+: not authenticated within 1 s", TimeSpan.FromSeconds(10));
        Assert.That(receiver.Process.HasExited, Is.False, "--once is not used up by an unauthenticated connection");
    }

    [Test]
    public async Task Second_source_while_a_once_receiver_serves_one_is_refused_with_an_error()
    {
        using var dir = new TempDir("engine");
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys: null);
        await using (var first = await RawSource.ConnectAsync(receiver.Port))
        {
            Assert.That((await first.HelloAsync("vda")).Type, Is.EqualTo(FrameType.Welcome));
            await using (var second = await RawSource.ConnectAsync(receiver.Port))
            {
                var answer = await second.HelloAsync("vdb");
                Assert.That(answer.Type, Is.EqualTo(FrameType.Error));
                Assert.That(System.Text.Encoding.UTF8.GetString(answer.Payload), Does.Contain("serves one migration and is busy with another"));
            }
            Assert.That(receiver.Process.HasExited, Is.False, "the first migration goes on");
            var seq = first.NextSequence;
            await first.SendAsync(FrameType.Data, RawSource.DataPayload(0, new byte[65536]));
            var ack = await first.Reader.ReadRequiredAsync("ack", CancellationToken.None);
            Assert.That(ack.Type, Is.EqualTo(FrameType.Ack));
        }
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.EqualTo(1), "the one migration ended uncommitted");
        Assert.That(File.Exists(Path.Combine(dir["dst"], "vdb.img")), Is.False);
    }

    [TestCase(false, false, "no answer to the connection and authentication", TestName = "Source_gives_up_on_a_listener_that_never_answers")]
    [TestCase(false, true, "no answer to the connection and authentication", TestName = "Source_gives_up_on_a_receiver_silent_in_the_TLS_handshake")]
    [TestCase(true, true, "no Welcome after our Hello", TestName = "Source_gives_up_on_a_receiver_that_sends_no_welcome")]
    public async Task Source_gives_up_on_a_silent_receiver(bool plaintext, bool answerOpening, string stage)
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, 4L << 20, 1 << 20);
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        using var stop = new CancellationTokenSource();
        var held = new List<TcpClient>();
        // the kernel completes the TCP handshake from the backlog even if nobody accepts
        var fake = answerOpening ? Task.Run(async () =>
        {
            var c = await listener.AcceptTcpClientAsync(stop.Token);
            held.Add(c);
            var preamble = new byte[8];
            await c.GetStream().ReadExactlyAsync(preamble, stop.Token);
            await c.GetStream().WriteAsync("Y"u8.ToArray(), stop.Token);
            await Task.Delay(Timeout.Infinite, stop.Token);
        }) : Task.CompletedTask;
        try
        {
            var run = await MigrateRun.RunAsync(source, $"127.0.0.1:{port}", plaintext ? null : keys, "--connect-timeout", "2");

            Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
            Assert.That(run.Error, Does.Contain($"receiver 127.0.0.1:{port} did not answer within 2 s ({stage})"));
            Assert.That(source.Map.Info().DirtyBlocks, Is.Zero, "the map was not touched");
        }
        finally
        {
            await stop.CancelAsync();
            try
            {
                await fake;
            }
            catch (OperationCanceledException) { }
            foreach (var c in held) c.Dispose();
            listener.Stop();
        }
    }

    /// <summary>True once the peer has closed (EOF or reset); false if it is still open after <paramref name="within"/>.</summary>
    internal static async Task<bool> ClosedByPeerAsync(TcpClient c, TimeSpan within)
    {
        using var t = new CancellationTokenSource(within);
        try
        {
            var b = new byte[1];
            return await c.GetStream().ReadAsync(b, t.Token) == 0;
        }
        catch (IOException)
        {
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    private static string Sha256(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(f));
    }
}
