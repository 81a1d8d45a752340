using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Tmds.Linux;

namespace BlockMigrate.Interop;

/// <summary>
/// How many bytes the peer has acknowledged on each established TCP connection of this network
/// namespace to one address and port: the kernel's <c>tcp_info.tcpi_bytes_acked</c> (Linux ≥ 4.1) of
/// every matching socket, read with one <c>NETLINK_SOCK_DIAG</c> dump (what <c>ss -ti</c> reads; no
/// privilege needed). The hypervisor's memory stream leaves another process (QEMU), so this is the one
/// way to see its bytes on the wire, after compression and TLS, without being in its path.
/// <para>The socket, <c>send</c> and <c>recv</c> come from Tmds.LibC; the sock_diag request and reply
/// layouts (linux/inet_diag.h, linux/sock_diag.h, linux/netlink.h, linux/tcp.h) are the kernel's
/// stable UAPI, declared here as offsets. Every reply is parsed with bounds checks.</para>
/// </summary>
internal static unsafe class TcpBytesAcked
{
    private const int NETLINK_SOCK_DIAG = 4, SOCK_DIAG_BY_FAMILY = 20;
    private const ushort NLM_F_REQUEST = 1, NLM_F_DUMP = 0x300;
    private const ushort NLMSG_ERROR = 2, NLMSG_DONE = 3;
    private const int INET_DIAG_INFO = 2;
    private const int TCP_ESTABLISHED = 1, TCP_FIN_WAIT1 = 4, TCP_FIN_WAIT2 = 5, TCP_CLOSE_WAIT = 8, TCP_LAST_ACK = 9, TCP_CLOSING = 11;
    private const int NlmsgHdrLen = 16, InetDiagReqLen = 56, InetDiagMsgLen = 72;
    private const int BytesAckedOffset = 120; // struct tcp_info: 8 bytes of u8 fields, 24 u32, pacing_rate, max_pacing_rate, bytes_acked

    /// <summary>
    /// Every matching connection's (socket cookie, bytes acknowledged, bytes written to it and not yet
    /// acknowledged: its send queue); empty when none matches.
    /// Throws <see cref="IOException"/> when the kernel cannot be asked (no sock_diag).
    /// </summary>
    public static List<(ulong Cookie, long BytesAcked, long Queued)> Read(IPAddress destination, int port)
    {
        var family = destination.AddressFamily == AddressFamily.InterNetworkV6 ? LibC.AF_INET6 : LibC.AF_INET;
        var wanted = destination.GetAddressBytes();
        var fd = LibC.socket(LibC.AF_NETLINK, LibC.SOCK_DGRAM | LibC.SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if (fd < 0) throw new IOException("sock_diag: socket: " + NativeMethods.ErrnoText(Marshal.GetLastPInvokeError()));
        try
        {
            var req = stackalloc byte[NlmsgHdrLen + InetDiagReqLen];
            new Span<byte>(req, NlmsgHdrLen + InetDiagReqLen).Clear();
            BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(req, 4), NlmsgHdrLen + InetDiagReqLen);
            BinaryPrimitives.WriteUInt16LittleEndian(new Span<byte>(req + 4, 2), SOCK_DIAG_BY_FAMILY);
            BinaryPrimitives.WriteUInt16LittleEndian(new Span<byte>(req + 6, 2), NLM_F_REQUEST | NLM_F_DUMP);
            var r = req + NlmsgHdrLen; // struct inet_diag_req_v2
            r[0] = (byte)family;
            r[1] = (byte)ProtocolType.Tcp;
            r[2] = 1 << (INET_DIAG_INFO - 1); // idiag_ext: ask for tcp_info
            // idiag_states: connections not yet in TIME_WAIT (which has no tcp_info); the dump filters on nothing else
            BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(r + 4, 4), (1u << TCP_ESTABLISHED) | (1u << TCP_FIN_WAIT1) | (1u << TCP_FIN_WAIT2) | (1u << TCP_CLOSE_WAIT) | (1u << TCP_LAST_ACK) | (1u << TCP_CLOSING));
            if (LibC.send(fd, req, NlmsgHdrLen + InetDiagReqLen, 0) < 0)
                throw new IOException("sock_diag: send: " + NativeMethods.ErrnoText(Marshal.GetLastPInvokeError()));

            var found = new List<(ulong, long, long)>();
            var buf = new byte[64 * 1024];
            while (true)
            {
                long n;
                fixed (byte* b = buf) n = LibC.recv(fd, b, buf.Length, 0);
                if (n < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    if (errno == LibC.EINTR) continue;
                    throw new IOException("sock_diag: recv: " + NativeMethods.ErrnoText(errno));
                }
                if (n == 0) return found;
                if (Parse(buf.AsSpan(0, (int)n), family, wanted, port, found)) return found;
            }
        }
        finally
        {
            LibC.close(fd);
        }
    }

    /// <summary>Adds the matching sockets of one reply datagram to <paramref name="found"/>; true at the dump's end.</summary>
    internal static bool Parse(ReadOnlySpan<byte> d, int family, byte[] wanted, int port, List<(ulong, long, long)> found)
    {
        while (d.Length >= NlmsgHdrLen)
        {
            var len = BinaryPrimitives.ReadUInt32LittleEndian(d);
            var type = BinaryPrimitives.ReadUInt16LittleEndian(d[4..]);
            if (len < NlmsgHdrLen || len > d.Length) throw new IOException($"sock_diag: a reply of {len} bytes in a datagram of {d.Length}");
            var body = d[NlmsgHdrLen..(int)len];
            if (type == NLMSG_DONE) return true;
            if (type == NLMSG_ERROR)
            {
                var err = body.Length >= 4 ? -BinaryPrimitives.ReadInt32LittleEndian(body) : 0;
                throw new IOException("sock_diag: the kernel refused the dump: " + (err > 0 ? NativeMethods.ErrnoText(err) : "no error code"));
            }
            if (type == SOCK_DIAG_BY_FAMILY && body.Length >= InetDiagMsgLen && body[0] == family)
                Match(body, wanted, port, found);
            d = d[Math.Min(d.Length, (int)((len + 3) & ~3u))..];
        }
        return false;
    }

    private static void Match(ReadOnlySpan<byte> m, byte[] wanted, int port, List<(ulong, long, long)> found)
    {
        // struct inet_diag_msg: family, state, timer, retrans; id { sport, dport (big-endian), src[16], dst[16], if, cookie[2] }
        var id = m[4..];
        if (BinaryPrimitives.ReadUInt16BigEndian(id[2..]) != port) return;
        if (!id.Slice(20, wanted.Length).SequenceEqual(wanted)) return;
        var cookie = BinaryPrimitives.ReadUInt64LittleEndian(id[40..]);
        var queued = BinaryPrimitives.ReadUInt32LittleEndian(m[60..]); // idiag_wqueue: written, not yet acknowledged
        for (var a = m[InetDiagMsgLen..]; a.Length >= 4;)
        {
            var alen = BinaryPrimitives.ReadUInt16LittleEndian(a);
            var atype = BinaryPrimitives.ReadUInt16LittleEndian(a[2..]);
            if (alen < 4 || alen > a.Length) return; // a damaged attribute: skip the socket
            if (atype == INET_DIAG_INFO && alen >= 4 + BytesAckedOffset + 8)
            {
                var acked = BinaryPrimitives.ReadUInt64LittleEndian(a[(4 + BytesAckedOffset)..]);
                found.Add((cookie, (long)Math.Min(acked, long.MaxValue), queued));
                return;
            }
            a = a[Math.Min(a.Length, (alen + 3) & ~3)..];
        }
    }
}
