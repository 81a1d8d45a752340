using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace BlockMigrate.Network;

/// <summary>
/// RFC 2136 UPDATE through BIND's nsupdate (TSIG-signed with -k), and the matching dig query. nsupdate
/// exits non-zero on any failure and says why on stderr ("update failed: REFUSED",
/// "update failed: NOTAUTH(BADSIG)", "; TSIG error with server: tsig verify failure", "timed out");
/// <see cref="Classify"/> turns that into a status and one line a person can act on.
/// </summary>
internal sealed class NsUpdate(IHostRunner runner, DnsServerAddress server, string zone, string? keyFile, TimeSpan timeout)
{
    public sealed record Record(string Type, int Ttl, string Data);

    public static string Fqdn(string name) => name.EndsWith('.') ? name : name + ".";

    public static string TypeOf(IPAddress a) => a.AddressFamily == AddressFamily.InterNetworkV6 ? "AAAA" : "A";

    /// <summary>Sends one update made of <paramref name="lines"/> ("update delete ...", "update add ...").</summary>
    public async Task<(DnsUpdateStatus Status, string Message)> SendAsync(IEnumerable<string> lines, string what, CancellationToken ct)
    {
        if (keyFile is not null && TsigKeyFile.Problem(keyFile) is { } bad)
            return (DnsUpdateStatus.KeyRejected, bad);
        var script = new StringBuilder();
        script.Append(CultureInfo.InvariantCulture, $"server {server.Host} {server.Port}\n");
        script.Append(CultureInfo.InvariantCulture, $"zone {Fqdn(zone)}\n");
        foreach (var l in lines) script.Append(l).Append('\n');
        script.Append("send\n");
        var secs = Math.Max(1, (int)Math.Ceiling(timeout.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
        List<string> args = keyFile is null ? ["-t", secs] : ["-k", keyFile, "-t", secs];
        var r = await runner.RunAsync("nsupdate", args, script.ToString(), ct).ConfigureAwait(false);
        return Classify(r, what, server, keyFile is not null);
    }

    public static (DnsUpdateStatus, string) Classify(HostCommandResult r, string what, DnsServerAddress server, bool signed)
    {
        if (r.Succeeded) return (DnsUpdateStatus.Updated, "");
        var text = r.StandardError + "\n" + r.StandardOutput;
        var at = $"DNS update ({what}) at {server}";
        bool Has(string s) => text.Contains(s, StringComparison.Ordinal);
        if (Has("NOTAUTH") || Has("TSIG error") || Has("tsig verify failure"))
        {
            var detail = Between(text, "update failed: ") ?? "NOTAUTH";
            string why = detail.Contains("BADTIME", StringComparison.Ordinal)
                    ? "the signature's time is off: check both clocks"
                : detail.Contains("BAD", StringComparison.Ordinal) || Has("tsig verify failure")
                    ? "the server rejected our TSIG signature: the key file's name or secret differs from the server's"
                : signed ? "the server is not authoritative for the zone: check dns-zone and dns-server (the zone's primary)"
                : "the update is unsigned, or the server is not authoritative for the zone";
            return (DnsUpdateStatus.NotAuthorized, $"{at} not authorised ({detail}): {why}");
        }
        if (Has("REFUSED"))
            return (DnsUpdateStatus.Refused, signed
                ? $"{at} refused (REFUSED): the zone's update-policy does not let this key change the name"
                : $"{at} refused (REFUSED): the server wants a signed update; configure a TSIG key file");
        if (Has("timed out") || Has("connection refused") || Has("could not reach") || Has("no servers could be reached")
            || Has("network unreachable") || Has("host unreachable"))
        {
            var detail = Has("connection refused") ? "connection refused" : Has("timed out") ? "timed out" : "unreachable";
            return (DnsUpdateStatus.Unreachable, $"{at} got no answer ({detail}): check dns-server and that the primary is up and reachable");
        }
        return (DnsUpdateStatus.Failed, $"{at} failed: {r.FirstErrorLine}");
    }

    static string? Between(string text, string marker)
    {
        int i = text.IndexOf(marker, StringComparison.Ordinal);
        if (i < 0) return null;
        var rest = text[(i + marker.Length)..];
        int end = rest.IndexOfAny(['\n', '\r']);
        return (end < 0 ? rest : rest[..end]).Trim();
    }

    /// <summary>The name's records of one type, straight from the primary (no recursion, no cache).</summary>
    public async Task<(List<Record>? Records, string? Error)> QueryAsync(string name, string type, CancellationToken ct)
    {
        var secs = Math.Max(1, (int)Math.Ceiling(timeout.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
        var r = await runner.RunAsync("dig", ["+noall", "+answer", "+norecurse", $"+time={secs}", "+tries=2",
            "-p", server.Port.ToString(CultureInfo.InvariantCulture), $"@{server.Host}", Fqdn(name), type], null, ct).ConfigureAwait(false);
        if (!r.Succeeded)
            return (null, $"dig {Fqdn(name)} {type} at {server} failed: {r.FirstErrorLine}");
        var list = new List<Record>();
        foreach (var line in r.StandardOutput.Split('\n'))
        {
            var f = line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (f.Length >= 5 && f[3] == type && int.TryParse(f[1], CultureInfo.InvariantCulture, out var ttl)
                && string.Equals(f[0], Fqdn(name), StringComparison.OrdinalIgnoreCase))
                list.Add(new Record(type, ttl, f[4]));
        }
        return (list, null);
    }
}
