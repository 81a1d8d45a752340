namespace BlockMigrate.TestSupport;

/// <summary>
/// Two network namespaces, a "source host" and a "destination host", joined by one veth pair
/// (10.199.N.1 and 10.199.N.2), optionally shaped with tc tbf (this kernel has no netem). Unix sockets
/// on the filesystem (QMP, NBD) stay reachable from every namespace. Deleted on Dispose.
/// </summary>
public sealed class NamespacePair : IDisposable
{
    private NamespacePair(string source, string destination, string sourceAddress, string destinationAddress)
    {
        Source = source;
        Destination = destination;
        SourceAddress = sourceAddress;
        DestinationAddress = destinationAddress;
    }

    public string Source { get; }
    public string Destination { get; }
    public string SourceAddress { get; }
    public string DestinationAddress { get; }

    /// <param name="rate">tbf rate on both ends, e.g. "200mbit"; null = unshaped.</param>
    public static async Task<NamespacePair> CreateAsync(string tag, string? rate = null)
    {
        var id = $"{tag}{Environment.ProcessId % 10000}";
        var net = Environment.ProcessId % 250 + 1;
        var pair = new NamespacePair($"bm-{id}-s", $"bm-{id}-d", $"10.199.{net}.1", $"10.199.{net}.2");
        try
        {
            await pair.SetUpAsync(rate);
            return pair;
        }
        catch
        {
            pair.Dispose();
            throw;
        }
    }

    private async Task SetUpAsync(string? rate)
    {
        foreach (var ns in new[] { Source, Destination })
        {
            await Tool.RunAsync("ip", ["netns", "del", ns]); // a leftover of a killed run
            await Tool.CheckAsync("ip", ["netns", "add", ns]);
            await Tool.CheckAsync("ip", ["-n", ns, "link", "set", "lo", "up"]);
        }
        await Tool.CheckAsync("ip", ["-n", Source, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", Destination]);
        foreach (var (ns, addr) in new[] { (Source, SourceAddress), (Destination, DestinationAddress) })
        {
            await Tool.CheckAsync("ip", ["-n", ns, "addr", "add", addr + "/24", "dev", "eth0"]);
            await Tool.CheckAsync("ip", ["-n", ns, "link", "set", "eth0", "up"]);
            if (rate != null)
                await Tool.CheckAsync("tc", ["-n", ns, "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate, "burst", "64kb", "latency", "50ms"]);
        }
    }

    public void Dispose()
    {
        foreach (var ns in new[] { Source, Destination })
            Tool.RunAsync("ip", ["netns", "del", ns]).GetAwaiter().GetResult();
    }
}
