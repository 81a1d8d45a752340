using System.Globalization;
using System.Net;
using BlockMigrate.Interop;

namespace BlockMigrate.Hypervisors.Qemu;

/// <summary>
/// The memory stream's bytes on the wire: the sum of <c>tcpi_bytes_acked</c> over the source QEMU's
/// connections to the migration URI's address and port (the main stream and every multifd channel),
/// read from the kernel (<see cref="TcpBytesAcked"/>). QEMU's own <c>ram.transferred</c> counts pages
/// before multifd compression (78 MB counted for 29 MB on the wire with zstd, measured here), so it
/// cannot tell how well the guest's memory compresses; this can.
/// <para>Monotonic: each connection's highest count is kept by its socket cookie, so a channel that
/// closes keeps what it sent. Connections already open when the meter starts (another migration's)
/// are left out. Only a <c>tcp:</c> URI can be metered, and only from the source host's network
/// namespace (where the migrating process runs); otherwise <see cref="Total"/> stays null.</para>
/// </summary>
internal sealed class MemoryWireMeter
{
    private readonly IPAddress? _address;
    private readonly int _port;
    private readonly Dictionary<ulong, long> _seen = new();
    private long _queued; // the send queues at the last reading
    private readonly HashSet<ulong> _before = new();
    private bool _broken;

    private MemoryWireMeter(IPAddress? address, int port) => (_address, _port) = (address, port);

    /// <summary>Why the meter cannot measure, once (null while it can).</summary>
    public string? Unavailable { get; private set; }

    /// <summary>A meter for <paramref name="migrationUri"/> (<c>tcp:HOST:PORT</c>); started: connections open now do not count.</summary>
    public static MemoryWireMeter Start(string migrationUri)
    {
        var meter = Parse(migrationUri) is { } ep ? new MemoryWireMeter(ep.Address, ep.Port) : new MemoryWireMeter(null, 0)
        {
            Unavailable = $"the memory stream's bytes on the wire are not measured for '{migrationUri}' (a tcp: URI with an address or a resolvable name is)",
        };
        if (meter._address != null)
            try
            {
                foreach (var (cookie, _, _) in TcpBytesAcked.Read(meter._address, meter._port)) meter._before.Add(cookie);
            }
            catch (IOException e)
            {
                meter.Fail(e);
            }
        return meter;
    }

    /// <summary>The bytes acknowledged so far on the migration's connections; null when not measured.</summary>
    public long? Total()
    {
        lock (_seen) return TotalLocked();
    }

    /// <summary>
    /// The bytes QEMU has written to its connections so far (acknowledged + still in the send queues):
    /// what to set against QEMU's own count, which it takes as it writes; the acknowledged bytes alone lag
    /// it by the queues (megabytes on a slow link), which made a pacing loop on them oscillate.
    /// </summary>
    public long? Written() => Read() is { } r ? r.Acked + r.Queued : null;

    /// <summary>One reading: acknowledged so far, and what waits in the send queues now; null when not measured.</summary>
    public (long Acked, long Queued)? Read()
    {
        lock (_seen) return TotalLocked() is { } acked ? (acked, _queued) : null;
    }

    private long? TotalLocked()
    {
        if (_address == null || _broken) return null;
        try
        {
            long queued = 0;
            foreach (var (cookie, acked, inQueue) in TcpBytesAcked.Read(_address, _port))
            {
                if (_before.Contains(cookie)) continue;
                queued += inQueue;
                if (!_seen.TryGetValue(cookie, out var had) || acked > had) _seen[cookie] = acked;
            }
            _queued = queued;
        }
        catch (IOException e)
        {
            Fail(e);
            return null;
        }
        if (_seen.Count == 0) return null; // no connection of the migration seen (yet), e.g. QEMU in another namespace
        long sum = 0;
        foreach (var v in _seen.Values) sum += v;
        return sum;
    }

    private void Fail(IOException e)
    {
        _broken = true;
        Unavailable = "the memory stream's bytes on the wire are not measured: " + e.Message;
    }

    /// <summary><c>tcp:HOST:PORT</c> (HOST an address, <c>[v6]</c>, or a name resolved now) → its endpoint; anything else null.</summary>
    internal static IPEndPoint? Parse(string uri)
    {
        if (!uri.StartsWith("tcp:", StringComparison.Ordinal)) return null;
        var rest = uri[4..];
        var comma = rest.IndexOf(',', StringComparison.Ordinal); // QEMU URI options (e.g. ",ipv4")
        if (comma >= 0) rest = rest[..comma];
        var colon = rest.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(rest[(colon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
            return null;
        var host = rest[..colon].Trim('[', ']');
        if (IPAddress.TryParse(host, out var ip)) return new IPEndPoint(ip, port);
        try
        {
            var all = Dns.GetHostAddresses(host);
            return all.Length > 0 ? new IPEndPoint(all[0], port) : null;
        }
        catch (System.Net.Sockets.SocketException)
        {
            return null;
        }
    }
}
