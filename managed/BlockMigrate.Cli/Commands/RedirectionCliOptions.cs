// The network-redirection options of `blockmigrate migrate`: the flags for the common settings and
// the VM file's [network] section for all of them.  A flag wins over the file.  Bind() turns both
// into the library's RedirectionOptions and validates them: every problem is one line, and any
// problem is a usage error (exit 2) before anything is touched.
using System.CommandLine;
using System.Globalization;
using System.Net;
using BlockMigrate.Cli.Config;
using BlockMigrate.Engine;
using BlockMigrate.Network;

namespace BlockMigrate.Cli.Commands;

public static class RedirectionCliOptions
{
    /// <summary>The VM file's section, written <c>[network]</c>.</summary>
    public const string Section = "network";

    /// <summary>Keys of the [network] section.</summary>
    public static readonly string[] Keys =
    [
        "name", "zone", "dns-server", "key-file", "dns-ttl", "dns-prepare-ttl", "dns-command", "old-address", "new-address",
        "tunnel", "tunnel-remote", "tunnel-local", "tunnel-id", "destination-command", "destination-vm-device", "tunnel-timeout",
        "vm-name",
    ];

    static readonly Option<string?> DnsName = new("--dns-name") { Description = "the VM's DNS name to point at its new address (enables the DNS update)" };
    static readonly Option<string?> DnsServer = new("--dns-server") { Description = "the zone's primary server, HOST[:PORT]" };
    static readonly Option<string?> DnsZone = new("--dns-zone") { Description = "the zone the name is in" };
    static readonly Option<string?> DnsKey = new("--dns-key") { Description = "TSIG key file (tsig-keygen -a hmac-sha256; mode 0600)" };
    static readonly Option<string?> OldAddress = new("--old-address") { Description = "the VM's address on the source host (tunnelled for open connections)" };
    static readonly Option<string[]> NewAddress = new("--new-address") { Description = "the VM's address at the destination (repeatable or comma-separated; A/AAAA records)" };
    static readonly Option<string?> Tunnel = new("--tunnel") { Description = "tunnel for open connections: vxlan, gre, ipip, wireguard or none (default vxlan when old-address is given, else none)" };
    static readonly Option<string?> TunnelRemote = new("--tunnel-remote") { Description = "the destination host's IPv4 address, the tunnel's far end" };
    static readonly Option<string?> DestinationCommand = new("--destination-command") { Description = "command prefix that runs a command as root on the destination host, e.g. \"ssh -o BatchMode=yes root@dst\"" };
    static readonly Option<string?> TunnelTimeout = new("--tunnel-timeout") { Description = "remove the tunnel after this long even if connections remain: seconds, or 90s, 30m, 2h (default 30m)" };
    static readonly Option<int?> DnsPrepareTtl = new("--dns-prepare-ttl") { Description = "before migrating, lower the record's TTL to this many seconds" };

    /// <summary>Every flag, in --help order.</summary>
    public static IReadOnlyList<Option> All { get; } =
    [
        DnsName, DnsServer, DnsZone, DnsKey, OldAddress, NewAddress, Tunnel, TunnelRemote, DestinationCommand, TunnelTimeout,
        DnsPrepareTtl,
    ];

    /// <summary>Adds the flags to <paramref name="command"/>.</summary>
    public static void AddTo(Command command)
    {
        foreach (var o in All) command.Options.Add(o);
    }

    /// <summary>
    /// The redirection asked for by the flags and the [network] section; null when neither asks for any.
    /// Throws <see cref="UsageException"/> with one line per problem.
    /// </summary>
    public static RedirectionOptions? Bind(ParseResult r, KeyValueFile file, string configName, IReadOnlyList<DiskSpec> disks)
    {
        var sections = file.Sections.Where(s => s.Kind == Section).ToList();
        if (sections.Count > 1) throw new UsageException($"{configName}: more than one [network] section");
        var values = sections.Count == 1 ? sections[0].Values : new Dictionary<string, string>();
        if (sections.Count == 1)
        {
            var unknown = values.Keys.Where(k => !Keys.Contains(k, StringComparer.OrdinalIgnoreCase)).ToList();
            if (unknown.Count > 0)
                throw new UsageException($"{configName}: [network]: unknown key '{unknown[0]}' (known: {string.Join(", ", Keys)})");
        }
        if (sections.Count == 0 && All.All(o => r.GetResult(o) is null)) return null;

        var errors = new List<string>();
        string? Get(Option<string?> o, string key) => r.GetValue(o) ?? values.GetValueOrDefault(key);
        IPAddress? Address(string? text, string what)
        {
            if (text is null) return null;
            var t = text.Trim();
            // IPAddress.TryParse also takes inet_aton forms ("10.1" = 10.0.0.1): ask for four parts
            if (IPAddress.TryParse(t, out var a) && (t.Contains(':') || t.Count(c => c == '.') == 3)) return a;
            errors.Add($"{what} '{text}' is not an IP address");
            return null;
        }
        int? Int(string? text, string what)
        {
            if (text is null) return null;
            if (int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n)) return n;
            errors.Add($"{what} '{text}' is not a number");
            return null;
        }

        var newTexts = (r.GetValue(NewAddress) is { Length: > 0 } flags ? flags : values.GetValueOrDefault("new-address") is { } v ? [v] : [])
            .SelectMany(t => t.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        var newAddresses = newTexts.Select(t => Address(t, "new-address")).OfType<IPAddress>().ToList();
        var old = Address(Get(OldAddress, "old-address"), "old-address");
        var tunnelText = Get(Tunnel, "tunnel");
        var tunnel = tunnelText is null ? (old is null ? TunnelKind.None : TunnelKind.Vxlan) : ParseTunnel(tunnelText, errors);
        var timeoutText = Get(TunnelTimeout, "tunnel-timeout");
        var timeout = timeoutText is null ? (TimeSpan?)null : ParseDuration(timeoutText, "tunnel-timeout", errors);
        var keyFile = Get(DnsKey, "key-file");
        var vmName = values.GetValueOrDefault("vm-name")
            ?? (configName.Length > 0 ? Path.GetFileNameWithoutExtension(configName) : disks.FirstOrDefault()?.Name ?? "vm");

        var options = new RedirectionOptions
        {
            VmName = vmName,
            DnsName = Get(DnsName, "name"),
            Zone = Get(DnsZone, "zone"),
            DnsServer = Get(DnsServer, "dns-server"),
            KeyFile = keyFile is null ? null : Path.GetFullPath(keyFile),
            DnsTtl = Int(values.GetValueOrDefault("dns-ttl"), "dns-ttl") ?? 60,
            DnsPrepareTtl = r.GetValue(DnsPrepareTtl) ?? Int(values.GetValueOrDefault("dns-prepare-ttl"), "dns-prepare-ttl"),
            DnsCommand = values.GetValueOrDefault("dns-command") ?? "",
            OldAddress = old,
            NewAddresses = newAddresses,
            Tunnel = tunnel,
            TunnelRemote = Address(Get(TunnelRemote, "tunnel-remote"), "tunnel-remote"),
            TunnelLocal = Address(values.GetValueOrDefault("tunnel-local"), "tunnel-local"),
            TunnelId = Int(values.GetValueOrDefault("tunnel-id"), "tunnel-id"),
            DestinationCommand = Get(DestinationCommand, "destination-command"),
            DestinationVmDevice = values.GetValueOrDefault("destination-vm-device"),
        };
        if (timeout is { } t)
            options = options with { TunnelTimeout = t, TunnelMinimumHold = t < options.TunnelMinimumHold ? t : options.TunnelMinimumHold };
        if (options.DnsName is null && (options.Zone ?? options.DnsServer ?? keyFile) is not null)
            errors.Add("dns-name is missing (--dns-name or name in [network]): the DNS settings would not be used");
        if (keyFile is not null && options.DnsName is not null && TsigKeyFile.Problem(options.KeyFile!) is { } keyProblem)
            errors.Add(keyProblem);
        errors.AddRange(options.Validate());
        if (errors.Count > 0) throw new UsageException(errors);
        return options;
    }

    static TunnelKind ParseTunnel(string text, List<string> errors)
    {
        switch (text.Trim().ToLowerInvariant())
        {
            case "vxlan": return TunnelKind.Vxlan;
            case "gre": return TunnelKind.Gre;
            case "ipip": return TunnelKind.Ipip;
            case "wireguard": return TunnelKind.WireGuard;
            case "none": return TunnelKind.None;
            default:
                errors.Add($"tunnel '{text}' is not one of vxlan, gre, ipip, wireguard, none");
                return TunnelKind.None;
        }
    }

    /// <summary>"90" (seconds), "90s", "30m", "2h".</summary>
    internal static TimeSpan? ParseDuration(string text, string what, List<string> errors)
    {
        var t = text.Trim().ToLowerInvariant();
        var unit = t.Length > 0 && char.IsLetter(t[^1]) ? t[^1] : 's';
        var number = char.IsLetter(t.LastOrDefault()) ? t[..^1] : t;
        // at least a millisecond and less than TimeSpan's range: "1e-30" is not a zero timeout, "1e300" not an OverflowException
        if (double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out var n) && unit is 's' or 'm' or 'h'
            && n * unit switch { 'h' => 3600, 'm' => 60, _ => 1 } is var seconds && seconds >= 0.001 && seconds < TimeSpan.MaxValue.TotalSeconds / 2)
            return TimeSpan.FromSeconds(seconds);
        errors.Add($"{what} '{text}' is not a positive duration (seconds, or like 90s, 30m, 2h)");
        return null;
    }
}
