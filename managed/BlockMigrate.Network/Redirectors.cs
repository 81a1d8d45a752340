using Microsoft.Extensions.Logging;

namespace BlockMigrate.Network;

/// <summary>Builds the redirector that the options ask for.</summary>
public static class Redirectors
{
    /// <summary>Tunnel+DNS, tunnel, DNS or none, with runners from the options' command prefixes.
    /// Throws <see cref="ArgumentException"/> (message: the validation lines) for invalid options.</summary>
    /// <param name="loggers">Names the redirectors' loggers ("BlockMigrate.Network.Tunnel", "BlockMigrate.Network.Dns"); none: they log nothing.</param>
    public static IRedirector Create(RedirectionOptions options, ILoggerFactory? loggers = null)
    {
        var tunnelLog = loggers?.CreateLogger("BlockMigrate.Network.Tunnel");
        var dnsLog = loggers?.CreateLogger("BlockMigrate.Network.Dns");
        if (options.Validate() is { Count: > 0 } errors)
            throw new ArgumentException(string.Join("; ", errors), nameof(options));
        return (options.TunnelEnabled, options.DnsEnabled) switch
        {
            (true, true) => new CompositeRedirector(new TunnelRedirector(options, tunnelLog), new DynamicDnsRedirector(options, dnsLog)),
            (true, false) => new TunnelRedirector(options, tunnelLog),
            (false, true) => new DynamicDnsRedirector(options, dnsLog),
            _ => new NoneRedirector(),
        };
    }
}
