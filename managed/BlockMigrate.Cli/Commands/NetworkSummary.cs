using BlockMigrate.Network;

namespace BlockMigrate.Cli.Commands;

/// <summary>One line about the network redirection for the text report.</summary>
public static class NetworkSummary
{
    public static string Describe(RedirectionReport n)
    {
        var parts = new List<string>();
        if (n.TunnelLink is { } link)
            parts.Add($"tunnel {link} ({n.TunnelKind}) " + (n.TunnelRemovedAt is { } gone && n.TunnelUpAt is { } up
                ? $"up {(gone - up).TotalSeconds:0.0} s, removed: {n.TunnelRemovedBecause}"
                : n.TunnelRemovedBecause is { } why ? $"removed: {why}" : "not removed"));
        if (n.DnsStatus is { } dns)
            parts.Add(dns == DnsUpdateStatus.Updated ? $"DNS updated to {string.Join(", ", n.DnsAddresses ?? [])}" : $"DNS update FAILED: {dns}");
        if (n.Errors.Count > 0) parts.Add($"{n.Errors.Count} error(s), first: {n.Errors[0].Message}");
        return parts.Count == 0 ? n.Redirector : string.Join("; ", parts);
    }
}
