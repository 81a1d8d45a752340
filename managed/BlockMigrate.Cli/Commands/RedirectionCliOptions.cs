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

    private static Setting<string?> Text(string flag, string key, string help, string? defaultText = null) =>
        new(flag, key, help, t => t, null, defaultText, Section);

    // Each flag once, with its key in [network]; the values are checked below, all problems together.
    static readonly Setting<string?> DnsName = Text("--dns-name", "name", "the VM's DNS name to point at its new address (enables the DNS update)");
    static readonly Setting<string?> DnsServer = Text("--dns-server", "dns-server", "the zone's primary server, HOST[:PORT]");
    static readonly Setting<string?> DnsZone = Text("--dns-zone", "zone", "the zone the name is in");
    static readonly Setting<string?> DnsKey = Text("--dns-key", "key-file", "TSIG key file (tsig-keygen -a hmac-sha256; mode 0600)");
    static readonly Setting<string?> OldAddress = Text("--old-address", "old-address", "the VM's address on the source host (tunnelled for open connections)");
    /// <summary>Repeatable, so a plain option; its key is <c>new-address</c> (comma-separated).</summary>
    static readonly Option<string[]> NewAddress = new("--new-address") { Description = "the VM's address at the destination (repeatable or comma-separated; A/AAAA records)" };
    static readonly Setting<string?> Tunnel = Text("--tunnel", "tunnel", "tunnel for open connections: vxlan, gre, ipip, wireguard or none", "vxlan when old-address is given, else none");
    static readonly Setting<string?> TunnelRemote = Text("--tunnel-remote", "tunnel-remote", "the destination host's IPv4 address, the tunnel's far end");
    static readonly Setting<string?> DestinationCommand = Text("--destination-command", "destination-command", "command prefix that runs a command as root on the destination host, e.g. \"ssh -o BatchMode=yes root@dst\"");
    static readonly Setting<string?> TunnelTimeout = Text("--tunnel-timeout", "tunnel-timeout", "remove the tunnel after this long even if connections remain: seconds, or 90s, 30m, 2h", "30m");
    static readonly Setting<string?> TunnelStaleAfter = Text("--tunnel-stale-after", "tunnel-stale-after", "a half-open or closing connection stops keeping the tunnel after this long without a packet: seconds, or 90s, 2m", "10s");
    static readonly Setting<string?> DnsPrepareTtl = Text("--dns-prepare-ttl", "dns-prepare-ttl", "before migrating, lower the record's TTL to this many seconds");

    /// <summary>The flags with a key, in --help order (then --new-address).</summary>
    static readonly IReadOnlyList<Setting> Settings = [DnsName, DnsServer, DnsZone, DnsKey, OldAddress, Tunnel, TunnelRemote, DestinationCommand, TunnelTimeout, TunnelStaleAfter, DnsPrepareTtl];

    /// <summary>Keys of the [network] section with no flag.</summary>
    static readonly string[] FileOnlyKeys = ["new-address", "dns-ttl", "dns-command", "tunnel-local", "tunnel-id", "destination-vm-device", "vm-name"];

    /// <summary>Keys of the [network] section.</summary>
    public static IReadOnlyList<string> Keys { get; } = [.. Settings.Select(s => s.Key!), .. FileOnlyKeys];

    /// <summary>Every flag, in --help order.</summary>
    public static IReadOnlyList<Option> All { get; } = [.. Settings.Take(5).Select(s => s.Option), NewAddress, .. Settings.Skip(5).Select(s => s.Option)];

    /// <summary>Adds the flags to <paramref name="command"/>.</summary>
    public static void AddTo(Command command)
    {
        foreach (var o in All) command.Options.Add(o);
    }

    /// <summary>
    /// The redirection asked for by the flags and the [network] section; null when neither asks for any.
    /// Throws <see cref="UsageException"/> with one line per problem.
    /// </summary>
    public static RedirectionOptions? Bind(Binder b, IReadOnlyList<DiskSpec> disks)
    {
        var (file, configName, r) = (b.File, b.FileName, b.Parse);
        var sections = file.Sections.Where(s => s.Kind == Section).ToList();
        if (sections.Count > 1) throw new UsageException($"{configName}: more than one [network] section");
        var values = sections.Count == 1 ? sections[0].Values : new Dictionary<string, string>();
        if (sections.Count == 1) b.CheckKeys(values, Settings, "[network]", FileOnlyKeys);
        if (sections.Count == 0 && All.All(o => r.GetResult(o) is null)) return null;

        var errors = new List<string>();
        string? Get(Setting<string?> s) => b.Get(s, values);
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
        var old = Address(Get(OldAddress), "old-address");
        var tunnelText = Get(Tunnel);
        var tunnel = tunnelText is null ? (old is null ? TunnelKind.None : TunnelKind.Vxlan) : ParseTunnel(tunnelText, errors);
        var timeoutText = Get(TunnelTimeout);
        var timeout = timeoutText is null ? (TimeSpan?)null : ParseDuration(timeoutText, "tunnel-timeout", errors);
        var staleText = Get(TunnelStaleAfter);
        var stale = staleText is null ? (TimeSpan?)null : ParseDuration(staleText, "tunnel-stale-after", errors);
        var keyFile = Get(DnsKey);
        var vmName = values.GetValueOrDefault("vm-name")
            ?? (configName.Length > 0 ? Path.GetFileNameWithoutExtension(configName) : disks.FirstOrDefault()?.Name ?? "vm");

        var options = new RedirectionOptions
        {
            VmName = vmName,
            DnsName = Get(DnsName),
            Zone = Get(DnsZone),
            DnsServer = Get(DnsServer),
            KeyFile = keyFile is null ? null : Path.GetFullPath(keyFile),
            DnsTtl = Int(values.GetValueOrDefault("dns-ttl"), "dns-ttl") ?? 60,
            DnsPrepareTtl = Int(Get(DnsPrepareTtl), "dns-prepare-ttl"),
            DnsCommand = values.GetValueOrDefault("dns-command") ?? "",
            OldAddress = old,
            NewAddresses = newAddresses,
            Tunnel = tunnel,
            TunnelRemote = Address(Get(TunnelRemote), "tunnel-remote"),
            TunnelLocal = Address(values.GetValueOrDefault("tunnel-local"), "tunnel-local"),
            TunnelId = Int(values.GetValueOrDefault("tunnel-id"), "tunnel-id"),
            DestinationCommand = Get(DestinationCommand),
            DestinationVmDevice = values.GetValueOrDefault("destination-vm-device"),
        };
        if (timeout is { } t)
            options = options with { TunnelTimeout = t, TunnelMinimumHold = t < options.TunnelMinimumHold ? t : options.TunnelMinimumHold };
        if (stale is { } s) options = options with { DrainStaleAfter = s };
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
