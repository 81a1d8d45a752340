using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using BlockMigrate.Hypervisors.Qemu;
using BlockMigrate.Interop;
using NUnit.Framework;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// The memory stream's bytes on the wire, from the kernel's sock_diag (real TCP connections on
/// loopback), and the pacing law that uses them.
/// </summary>
[TestFixture]
public sealed class MemoryWireMeterTests
{
    private static (Socket Client, Socket Server, TcpListener Listener) Pair()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndpoint);
        return (client, listener.AcceptSocket(), listener);
    }

    private static void SendAndDrain(Socket from, Socket to, int bytes)
    {
        var chunk = new byte[64 << 10];
        var reader = Task.Run(() =>
        {
            var buf = new byte[64 << 10];
            var got = 0;
            while (got < bytes) got += to.Receive(buf);
        });
        for (var sent = 0; sent < bytes; sent += chunk.Length) from.Send(chunk, Math.Min(chunk.Length, bytes - sent), SocketFlags.None);
        Assert.That(reader.Wait(TimeSpan.FromSeconds(20)), "the receiving side read everything");
    }

    [Test]
    public void The_kernel_reports_what_the_peer_acknowledged_on_each_connection_to_the_address_and_port()
    {
        var (client, server, listener) = Pair();
        using var c = client;
        using var s = server;
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        SendAndDrain(client, server, 3 << 20);
        Thread.Sleep(50); // the last ACK

        var found = TcpBytesAcked.Read(IPAddress.Loopback, port);
        Assert.That(found, Has.Count.EqualTo(1), "only the client's socket has this port as its destination");
        Assert.That(found[0].BytesAcked, Is.EqualTo(3 << 20).Within(64), "tcpi_bytes_acked counts the payload (plus the SYN's one byte)");
        Assert.That(TcpBytesAcked.Read(IPAddress.Loopback, port == 65535 ? 1 : port + 1), Is.Empty);
        Assert.That(TcpBytesAcked.Read(IPAddress.Parse("127.0.0.2"), port), Is.Empty, "another address");
    }

    [Test]
    public void The_meter_counts_only_connections_opened_after_it_started_and_keeps_a_closed_ones_bytes()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        Socket Connect()
        {
            var c = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            c.Connect(listener.LocalEndpoint);
            return c;
        }
        using var old = Connect();
        using var oldServer = listener.AcceptSocket();
        SendAndDrain(old, oldServer, 1 << 20);

        var meter = MemoryWireMeter.Start($"tcp:127.0.0.1:{port}");
        Assert.That(meter.Unavailable, Is.Null);
        Assert.That(meter.Total(), Is.Null, "nothing of the migration seen yet: not measured, not 0");

        var first = Connect();
        var firstServer = listener.AcceptSocket();
        SendAndDrain(first, firstServer, 2 << 20);
        using var second = Connect();
        using var secondServer = listener.AcceptSocket();
        SendAndDrain(second, secondServer, 1 << 20);
        SendAndDrain(old, oldServer, 4 << 20); // not ours: open before the meter started
        Thread.Sleep(50);
        Assert.That(meter.Total(), Is.EqualTo(3 << 20).Within(256));

        first.Dispose();
        firstServer.Dispose();
        Thread.Sleep(100); // past FIN_WAIT into TIME_WAIT, where the kernel has no tcp_info
        SendAndDrain(second, secondServer, 1 << 20);
        Thread.Sleep(50);
        Assert.That(meter.Total(), Is.EqualTo(4 << 20).Within(256), "a channel that closed keeps what it sent");
        listener.Stop();
    }

    [Test]
    public void Written_counts_what_waits_in_the_send_queue_too()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var meter = MemoryWireMeter.Start($"tcp:127.0.0.1:{port}");
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndpoint);
        using var server = listener.AcceptSocket(); // never reads: the data backs up into the client's send queue
        client.Blocking = false;
        var chunk = new byte[64 << 10];
        long written = 0;
        while (true)
        {
            try
            {
                written += client.Send(chunk);
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock)
            {
                break;
            }
        }
        Thread.Sleep(50);
        var acked = meter.Total()!.Value;
        Assert.That(acked, Is.LessThan(written - (64 << 10)), "some of it is still queued at the sender");
        Assert.That(meter.Written(), Is.EqualTo(written).Within(2), "acknowledged + queued = what the application wrote (+ the SYN's byte)");
        listener.Stop();
    }

    [TestCase("unix:/run/x.sock")]
    [TestCase("tcp:no-such-host.invalid:4444")]
    [TestCase("tcp:10.0.0.1")]
    [TestCase("tcp:10.0.0.1:0")]
    [TestCase("tcp:10.0.0.1:70000")]
    [TestCase("exec:cat")]
    public void A_uri_the_meter_cannot_follow_is_said_once_and_measures_nothing(string uri)
    {
        var meter = MemoryWireMeter.Start(uri);
        Assert.That(meter.Unavailable, Does.Contain("not measured"));
        Assert.That(meter.Total(), Is.Null);
    }

    [TestCase("tcp:10.1.2.3:4444", "10.1.2.3", 4444)]
    [TestCase("tcp:[fd00::2]:4444", "fd00::2", 4444)]
    [TestCase("tcp:10.1.2.3:4444,ipv4", "10.1.2.3", 4444)]
    [TestCase("tcp:localhost:5", "127.0.0.1", 5)]
    public void Uris_parse_to_the_endpoint_QEMU_connects_to(string uri, string address, int port)
    {
        var ep = MemoryWireMeter.Parse(uri);
        Assert.That(ep, Is.Not.Null);
        Assert.That(ep!.Port, Is.EqualTo(port));
        Assert.That(ep.Address.ToString(), address == "127.0.0.1" ? Is.EqualTo("127.0.0.1").Or.EqualTo("::1") : Is.EqualTo(address));
    }

    [Test]
    public void Pacing_follows_the_measured_compression_and_drains_the_send_queue()
    {
        const double link = 12.5e6;
        // a short queue (up to 50 ms of the link): 90% of the link, in QEMU's units at 2.4 bytes counted per byte written
        Assert.That(QemuHypervisor.Repace(22_500_000, link, 2.4, (long)(link * 0.05)), Is.EqualTo((long)(link * 0.9 * 2.4)).Within(2));
        Assert.That(QemuHypervisor.Repace((long)(link * 0.9 * 2.4), link, 2.45, (long)(link * 0.05)), Is.Null, "within 5%: left alone");
        // a long queue (250 ms of the link) is drained: the wire gets 0.9 - 0.4 = 50% of the link
        Assert.That(QemuHypervisor.Repace(22_500_000, link, 2, (long)(link * 0.25)), Is.EqualTo((long)(link * 0.5 * 2)).Within(2));
        Assert.That(QemuHypervisor.Repace(22_500_000, link, 2, (long)(link * 3)), Is.EqualTo((long)(link * 0.3 * 2)), "never below 30% of the link");
        Assert.That(QemuHypervisor.Repace(10_000_000, link, 2, 0), Is.EqualTo((long)(link * 0.9 * 2)).Within(2),
            "an empty queue is no reason to exceed 90%: a relay on the path would queue the rest where it cannot be seen");
        Assert.That(QemuHypervisor.Repace(22_500_000, link, 100, 0), Is.EqualTo((long)(link * 0.9 * QemuHypervisor.MaxRatio)).Within(8), "bounded above");
        Assert.That(QemuHypervisor.Repace(22_500_000, link, 0.5, 0), Is.EqualTo((long)(link * 0.9 * QemuHypervisor.MinRatio)).Within(2), "bounded below (TLS, headers)");
        Assert.That(QemuHypervisor.Repace(22_500_000, 1e9, 2, 0), Is.Null, "a cap at or above QEMU's default is no pacing");
        // the disks' rounds sent 30% of the link over the window: memory gets 60%
        Assert.That(QemuHypervisor.Repace(22_500_000, link, 2, 0, otherRate: link * 0.3), Is.EqualTo((long)(link * 0.6 * 2)).Within(2));
    }

    [Test]
    public void A_tcg_source_before_qemu_9_keeps_qemus_downtime_limit()
    {
        Assert.That(QemuHypervisor.LosesTcgWrites(kvmEnabled: false, 7, 2), Is.True, "Debian 12's QEMU under TCG");
        Assert.That(QemuHypervisor.LosesTcgWrites(kvmEnabled: false, 8, 2), Is.True);
        Assert.That(QemuHypervisor.LosesTcgWrites(kvmEnabled: false, 9, 0), Is.False, "fixed in 9.0 (commit 03bfc2188f)");
        Assert.That(QemuHypervisor.LosesTcgWrites(kvmEnabled: true, 7, 2), Is.False, "KVM tracks dirty pages itself");
        Assert.That(QemuHypervisor.StartingAimMs(losesTcgWrites: true), Is.EqualTo(300));
        Assert.That(QemuHypervisor.StartingAimMs(losesTcgWrites: false), Is.EqualTo(QemuHypervisor.AimedDowntimeMs));
    }

    [Test]
    public void The_downtime_limit_starts_low_and_relaxes_while_the_copy_does_not_converge()
    {
        Assert.That(QemuHypervisor.RelaxDowntime(50, 1, 0), Is.Null, "the first pass");
        Assert.That(QemuHypervisor.RelaxDowntime(50, 3, 0), Is.Null, "a light guest converges by its 3rd pass");
        Assert.That(QemuHypervisor.RelaxDowntime(50, 4, 0), Is.EqualTo(75));
        Assert.That(QemuHypervisor.RelaxDowntime(75, 5, 4), Is.Null, "every second pass");
        Assert.That(QemuHypervisor.RelaxDowntime(75, 6, 4), Is.EqualTo(112));
        long limit = 50, at = 0, passedQemusDefault = 0;
        for (long sync = 1; sync <= 40; sync++)
            if (QemuHypervisor.RelaxDowntime(limit, sync, at) is { } next)
            {
                (limit, at) = (next, sync);
                if (passedQemusDefault == 0 && limit >= 300) passedQemusDefault = sync;
            }
        Assert.That(passedQemusDefault, Is.LessThanOrEqualTo(14), "QEMU's 300 ms by the 14th pass");
        Assert.That(limit, Is.EqualTo(QemuHypervisor.MaxRelaxedDowntimeMs), "then on, up to 2 s: a paced copy must end");
        Assert.That(QemuHypervisor.RelaxDowntime(QemuHypervisor.MaxRelaxedDowntimeMs, 100, 0), Is.Null);
    }

    // A reply datagram: nlmsghdr + inet_diag_msg (+ attributes), as the kernel sends it.
    private static byte[] Reply(ushort type, int family, int dport, byte[] dst, ulong cookie, byte[]? attributes, int? lengthField = null)
    {
        var body = new byte[72 + (attributes?.Length ?? 0)];
        body[0] = (byte)family;
        BinaryPrimitives.WriteUInt16BigEndian(body.AsSpan(6), (ushort)dport);
        dst.CopyTo(body, 4 + 20);
        BinaryPrimitives.WriteUInt64LittleEndian(body.AsSpan(4 + 40), cookie);
        BinaryPrimitives.WriteUInt32LittleEndian(body.AsSpan(60), 99); // idiag_wqueue
        attributes?.CopyTo(body, 72);
        var m = new byte[16 + body.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(m, (uint)(lengthField ?? m.Length));
        BinaryPrimitives.WriteUInt16LittleEndian(m.AsSpan(4), type);
        body.CopyTo(m, 16);
        return m;
    }

    private static byte[] InfoAttribute(ulong acked, int length = 4 + 232)
    {
        var a = new byte[length];
        BinaryPrimitives.WriteUInt16LittleEndian(a, (ushort)length);
        BinaryPrimitives.WriteUInt16LittleEndian(a.AsSpan(2), 2);
        if (length >= 4 + 128) BinaryPrimitives.WriteUInt64LittleEndian(a.AsSpan(4 + 120), acked);
        return a;
    }

    [Test]
    public void Damaged_replies_are_refused_or_skipped_never_read_past()
    {
        var dst = IPAddress.Parse("10.0.0.2").GetAddressBytes();
        var found = new List<(ulong, long, long)>();
        Assert.That(TcpBytesAcked.Parse(Reply(20, 2, 4444, dst, 7, InfoAttribute(1234)), 2, dst, 4444, found), Is.False);
        Assert.That(found, Is.EqualTo(new List<(ulong, long, long)> { (7, 1234, 99) }));

        found.Clear();
        Assert.Throws<IOException>(() => TcpBytesAcked.Parse(Reply(20, 2, 4444, dst, 7, InfoAttribute(1), lengthField: 4000), 2, dst, 4444, found),
            "a message longer than its datagram");
        TcpBytesAcked.Parse(Reply(20, 2, 4444, dst, 7, InfoAttribute(1, length: 40)), 2, dst, 4444, found);
        Assert.That(found, Is.Empty, "a tcp_info too short to hold bytes_acked");
        var badAttr = InfoAttribute(1);
        BinaryPrimitives.WriteUInt16LittleEndian(badAttr, 60000);
        TcpBytesAcked.Parse(Reply(20, 2, 4444, dst, 7, badAttr), 2, dst, 4444, found);
        Assert.That(found, Is.Empty, "an attribute longer than the message");
        TcpBytesAcked.Parse(Reply(20, 10, 4444, dst, 7, InfoAttribute(1)), 2, dst, 4444, found);
        Assert.That(found, Is.Empty, "another family");
        TcpBytesAcked.Parse(Reply(20, 2, 4445, dst, 7, InfoAttribute(1)), 2, dst, 4444, found);
        Assert.That(found, Is.Empty, "another port");
        Assert.That(TcpBytesAcked.Parse(Reply(3, 2, 0, dst, 0, null), 2, dst, 4444, found), Is.True, "NLMSG_DONE ends the dump");
        var error = Reply(2, 0, 0, dst, 0, null);
        BinaryPrimitives.WriteInt32LittleEndian(error.AsSpan(16), -13);
        Assert.That(Assert.Throws<IOException>(() => TcpBytesAcked.Parse(error, 2, dst, 4444, found))!.Message, Does.Contain("refused"));
        Assert.That(TcpBytesAcked.Parse(new byte[10], 2, dst, 4444, found), Is.False, "a runt datagram holds nothing");
    }
}
