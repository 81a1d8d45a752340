using System.Net.Sockets;
using System.Text;
using BlockMigrate.Cli.Hosting;

namespace BlockMigrate.Packaging.Tests;

[TestFixture]
public class SystemdNotifyChecks
{
    [Test]
    public void Ready_sends_one_datagram_to_a_path_socket()
    {
        var path = Path.Combine(Path.GetTempPath(), $"bm-notify-{Guid.NewGuid():N}.sock");
        using var server = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        server.Bind(new UnixDomainSocketEndPoint(path));
        try
        {
            Assert.That(SystemdNotify.Notify("READY=1\nSTATUS=listening", path), Is.True);
            var buffer = new byte[256];
            server.ReceiveTimeout = 5000;
            var n = server.Receive(buffer);
            Assert.That(Encoding.UTF8.GetString(buffer, 0, n), Is.EqualTo("READY=1\nSTATUS=listening"));
        }
        finally { File.Delete(path); }
    }

    [Test]
    public void Abstract_socket_names_start_with_an_at_sign()
    {
        var name = $"bm-notify-{Guid.NewGuid():N}";
        using var server = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        server.Bind(new UnixDomainSocketEndPoint("\0" + name));
        Assert.That(SystemdNotify.Notify("READY=1", "@" + name), Is.True);
        var buffer = new byte[64];
        server.ReceiveTimeout = 5000;
        Assert.That(Encoding.UTF8.GetString(buffer, 0, server.Receive(buffer)), Is.EqualTo("READY=1"));
    }

    [Test]
    public void Without_a_socket_nothing_is_sent()
    {
        Assert.Multiple(() =>
        {
            Assert.That(SystemdNotify.Notify("READY=1", null), Is.False);
            Assert.That(SystemdNotify.Notify("READY=1", ""), Is.False);
            Assert.That(SystemdNotify.Notify("READY=1", "vsock:2:1234"), Is.False);
        });
    }
}
