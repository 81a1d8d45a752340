using System.Net;

namespace BlockMigrate.Network;

/// <summary>A DNS server given as "host", "host:port", "v6", or "[v6]:port".</summary>
public readonly record struct DnsServerAddress(string Host, int Port)
{
    /// <summary>Parse; false for an empty host or a bad port.</summary>
    public static bool TryParse(string text, out DnsServerAddress server)
    {
        server = default;
        var t = text.Trim();
        string host;
        int port = 53;
        if (t.StartsWith('['))
        {
            int close = t.IndexOf(']');
            if (close < 0) return false;
            host = t[1..close];
            var rest = t[(close + 1)..];
            if (rest.Length > 0 && (!rest.StartsWith(':') || !int.TryParse(rest[1..], out port))) return false;
        }
        else if (t.Count(c => c == ':') == 1)
        {
            var i = t.IndexOf(':');
            host = t[..i];
            if (!int.TryParse(t[(i + 1)..], out port)) return false;
        }
        else host = t;
        if (host.Length == 0 || port is < 1 or > 65535) return false;
        if (host.Contains(':') && !IPAddress.TryParse(host, out _)) return false;
        if (host.Any(char.IsWhiteSpace)) return false;
        server = new DnsServerAddress(host, port);
        return true;
    }

    /// <inheritdoc/>
    public override string ToString() => Host.Contains(':') ? $"[{Host}]:{Port}" : $"{Host}:{Port}";
}
