using System.Net;
using System.Net.Sockets;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>The shipped receiver.conf says <c>listen = [::]:7420</c>, "every address": IPv4 sources
/// too. .NET opens IPv6 sockets with IPV6_V6ONLY, so the receiver must ask for a dual-stack socket
/// (found by Packaging.Tests/SystemdGuestTests, where QEMU's forward reaches the guest over IPv4).</summary>
[CancelAfter(60_000)]
public sealed class ReceiverListenAddressTests
{
    [Test]
    public async Task Listening_on_the_IPv6_wildcard_accepts_IPv4_connections()
    {
        using var dir = new TempDir("listen6");
        Directory.CreateDirectory(dir["images"]);
        using var receiver = BackgroundProcess.Cli("receive", "--listen", "[::]:0", "--image-dir", dir["images"], "--plaintext");
        var m = await receiver.WaitForLineAsync(@"^listening on \[::\]:(\d+)$", TimeSpan.FromSeconds(30));
        var port = int.Parse(m.Groups[1].Value);
        using var client = new TcpClient(AddressFamily.InterNetwork);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await client.ConnectAsync(IPAddress.Loopback, port, cts.Token);
        Assert.That(client.Connected, Is.True);
        receiver.Stop(TimeSpan.FromSeconds(20));
    }
}
