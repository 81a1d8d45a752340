namespace BlockMigrate.Network;

/// <summary>Builds the redirector that the options ask for.</summary>
public static class Redirectors
{
    /// <summary>Tunnel+DNS, tunnel, DNS or none, with runners from the options' command prefixes.
    /// Throws <see cref="ArgumentException"/> (message: the validation lines) for invalid options.</summary>
    public static IRedirector Create(RedirectionOptions options)
    {
        if (options.Validate() is { Count: > 0 } errors)
            throw new ArgumentException(string.Join("; ", errors), nameof(options));
        return (options.TunnelEnabled, options.DnsEnabled) switch
        {
            (true, true) => new CompositeRedirector(new TunnelRedirector(options), new DynamicDnsRedirector(options)),
            (true, false) => new TunnelRedirector(options),
            (false, true) => new DynamicDnsRedirector(options),
            _ => new NoneRedirector(),
        };
    }
}
