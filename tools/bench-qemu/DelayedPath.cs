using System.Globalization;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Bench.Qemu;

/// <summary>
/// How a migration connection from the source host reaches one port of the destination host, with the
/// benchmark's one-way delay each way (<see cref="BenchSettings.Delay"/>). The kernel has no netem, so
/// the delay is tools/wanem.py, run in the source namespace: it listens on 127.0.0.1 there and forwards
/// every connection it accepts (several at once, as multifd opens them) to the destination address.
/// The forwarded traffic crosses the shaped veth once, and the hop from the client to the proxy is
/// loopback, so the wire counter on the source's eth0 counts the same bytes as without the proxy.
/// <para>
/// tbf on the veth shapes the aggregate rate. A proxy adds queues, and a migration that stops the
/// guest when it thinks little is left pays for every byte still queued, so they are kept small:
/// wanem gets a quarter more than the link rate, only so that it queues no more than a delay's worth
/// (rate x delay, plus <see cref="Buffer"/>) before it pushes back (without a rate it would buffer
/// 64 MiB); its sockets' kernel buffers are capped at <see cref="SocketBuffer"/> (autotuned, they held
/// megabytes); and <see cref="BenchHosts"/> gives the source namespace's loopback a NIC's MTU.
/// </para>
/// <para>
/// It delays data, not TCP's own acknowledgements: request-reply exchanges (NBD writes, the engine's
/// acks, QEMU's migration handshake) see the round trip; TCP's window growth does not. With no delay
/// there is no proxy: <see cref="Host"/> and <see cref="Port"/> are the destination's. Stopped by PID on Dispose.
/// </para>
/// </summary>
public sealed class DelayedPath : IDisposable
{
    private const string Buffer = "64K";
    private const string SocketBuffer = "64K";
    private readonly BackgroundProcess? _wanem;

    private DelayedPath(string host, int port, BackgroundProcess? wanem)
    {
        Host = host;
        Port = port;
        _wanem = wanem;
    }

    /// <summary>Where a client in the source namespace connects.</summary>
    public string Host { get; }
    public int Port { get; }
    public string HostPort => $"{Host}:{Port}";

    public static async Task<DelayedPath> StartAsync(BenchHosts hosts, int destinationPort)
    {
        var s = hosts.Settings;
        var destination = hosts.Net.DestinationAddress;
        if (s.Delay <= TimeSpan.Zero)
            return new DelayedPath(destination, destinationPort, null);
        var args = new List<string>
        {
            "netns", "exec", hosts.Net.Source, "/usr/bin/python3", Path.Combine(Repo.Root, "tools", "wanem.py"),
            "--listen", "127.0.0.1:0", "--to", $"{destination}:{destinationPort}",
            "--delay", s.Delay.TotalMilliseconds.ToString(CultureInfo.InvariantCulture), "--buffer", Buffer,
            "--socket-buffer", SocketBuffer,
        };
        if (s.RateBitsPerSecond is { } bps)
            args.AddRange(["--rate", (1.25 * bps).ToString("0", CultureInfo.InvariantCulture)]);
        var wanem = new BackgroundProcess("ip", args); // ip execs python: the PID is wanem's
        try
        {
            var port = (await wanem.WaitForLineAsync(@"^listening on [^\s]+:(\d+)$", TimeSpan.FromSeconds(30))).Groups[1].Value;
            return new DelayedPath("127.0.0.1", int.Parse(port, CultureInfo.InvariantCulture), wanem);
        }
        catch
        {
            wanem.Dispose();
            throw;
        }
    }

    /// <summary>What wanem reported on stderr (a destination it could not reach), for a failed run's detail.</summary>
    public string Errors => _wanem?.Stderr.Trim() ?? "";

    public void Dispose() => _wanem?.Dispose();
}
