namespace BlockMigrate.Network;

/// <summary>
/// Tunnel and DNS together, in the paper's order: the tunnel first (at the freeze, <see cref="DivertAsync"/>:
/// what clients send meanwhile waits at the destination, and the open connections must not wait), then at
/// the hand-over the DNS update (new connections go to
/// the new address); the tunnel stays until the old connections drain. Before migration DNS lowers its
/// TTL first, then the tunnel is prepared. Abort removes the tunnel and, before switchover, restores the TTL.
/// </summary>
public sealed class CompositeRedirector(TunnelRedirector tunnel, DynamicDnsRedirector dns) : IRedirector
{
    /// <inheritdoc/>
    public string Kind => "tunnel+dns";

    /// <summary>The tunnel part.</summary>
    public TunnelRedirector Tunnel => tunnel;

    /// <summary>The DNS part.</summary>
    public DynamicDnsRedirector Dns => dns;

    /// <inheritdoc/>
    public RedirectionReport Report => Merge(tunnel.Report, dns.Report);

    /// <inheritdoc/>
    public async Task<RedirectionReport> PrepareAsync(CancellationToken cancellationToken)
    {
        await dns.PrepareAsync(cancellationToken).ConfigureAwait(false);
        await tunnel.PrepareAsync(cancellationToken).ConfigureAwait(false);
        return Report;
    }

    /// <inheritdoc/>
    public async Task<RedirectionReport> DivertAsync(CancellationToken cancellationToken)
    {
        await tunnel.RedirectAsync(cancellationToken).ConfigureAwait(false);
        return Report;
    }

    /// <inheritdoc/>
    public async Task<RedirectionReport> RedirectAsync(CancellationToken cancellationToken)
    {
        await tunnel.RedirectAsync(cancellationToken).ConfigureAwait(false);
        await dns.RedirectAsync(cancellationToken).ConfigureAwait(false);
        return Report;
    }

    /// <inheritdoc/>
    public async Task<RedirectionReport> WaitDrainedAndTeardownAsync(CancellationToken cancellationToken)
    {
        await tunnel.WaitDrainedAndTeardownAsync(cancellationToken).ConfigureAwait(false);
        return Report;
    }

    /// <inheritdoc/>
    public async Task<RedirectionReport> AbortAsync(CancellationToken cancellationToken)
    {
        await tunnel.AbortAsync(cancellationToken).ConfigureAwait(false);
        await dns.AbortAsync(cancellationToken).ConfigureAwait(false);
        return Report;
    }

    static RedirectionReport Merge(RedirectionReport t, RedirectionReport d) => t with
    {
        Redirector = "tunnel+dns",
        DnsPreparedAt = d.DnsPreparedAt,
        DnsPreviousTtl = d.DnsPreviousTtl,
        DnsPreparedTtl = d.DnsPreparedTtl,
        DnsChangedAt = d.DnsChangedAt,
        DnsStatus = d.DnsStatus,
        DnsAddresses = d.DnsAddresses,
        Errors = [.. t.Errors.Concat(d.Errors).OrderBy(e => e.At)],
    };
}
