using System.Net;

namespace BlockMigrate.Cli.Commands;

/// <summary>HOST[:PORT] and ADDR:PORT parsing (IPv6 in brackets).</summary>
public static class Endpoint
{
    public static (string Host, int Port) ParseHostPort(string text, int defaultPort)
    {
        var t = text.Trim();
        if (t.StartsWith('['))
        {
            var close = t.IndexOf(']');
            if (close < 0) throw new BlockMigrateException($"bad address '{text}'");
            var host = t[1..close];
            return (host, close + 1 < t.Length && t[close + 1] == ':' ? Port(t[(close + 2)..], text) : defaultPort);
        }
        var colon = t.LastIndexOf(':');
        if (colon > 0 && t.IndexOf(':') == colon) return (t[..colon], Port(t[(colon + 1)..], text));
        if (t.Length == 0) throw new BlockMigrateException("empty address");
        return (t, defaultPort);
    }

    public static IPEndPoint ParseListen(string text, int defaultPort)
    {
        var (host, port) = ParseHostPort(text, defaultPort);
        if (host is "" or "*") return new IPEndPoint(IPAddress.Any, port);
        if (!IPAddress.TryParse(host, out var ip)) throw new BlockMigrateException($"listen address '{host}' is not an IP address");
        return new IPEndPoint(ip, port);
    }

    private static int Port(string s, string text) =>
        int.TryParse(s, out var p) && p is >= 0 and <= 65535 ? p : throw new BlockMigrateException($"bad port in '{text}'");
}
