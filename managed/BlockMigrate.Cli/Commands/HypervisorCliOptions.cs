using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using BlockMigrate.Cli.Config;
using BlockMigrate.Engine;
using BlockMigrate.Hypervisors;
using BlockMigrate.Hypervisors.Libvirt;
using BlockMigrate.Hypervisors.Qemu;
using BlockMigrate.Hypervisors.Xen;

namespace BlockMigrate.Cli.Commands;

/// <summary>
/// The hypervisor options of <c>blockmigrate migrate</c> (docs/hypervisors.md) and their binding to
/// <see cref="HypervisorOptions"/>. Each may also be given in the VM config file, under the global
/// key <c>hypervisor = qemu|xen|none</c> and a section <c>[hypervisor qemu]</c> or <c>[hypervisor xen]</c>
/// whose keys are the flags' names without the dashes in front (<c>qmp-source = /run/vm0.qmp</c>);
/// flags win over the file.
/// </summary>
public sealed class HypervisorCliOptions
{
    public Option<string?> Kind { get; } = new("--hypervisor") { Description = "who moves memory and devices: qemu (or kvm), libvirt, xen, or none (disk only; the default)" };
    public Option<string?> QmpSource { get; } = new("--qmp-source") { Description = "qemu: the source QEMU's QMP monitor, a unix socket path or tcp:HOST:PORT" };
    public Option<string?> QmpDestination { get; } = new("--qmp-destination") { Description = "qemu: the destination QEMU's QMP monitor (started with -incoming defer -S)" };
    public Option<string?> MigrationUri { get; } = new("--migration-uri") { Description = "qemu: where the source sends memory, e.g. tcp:DSTHOST:4444" };
    public Option<string?> IncomingUri { get; } = new("--incoming-uri") { Description = "qemu: what the destination listens on (default: the migration URI)" };
    public Option<bool> NoStartIncoming { get; } = new("--no-start-incoming") { Description = "qemu: the admin already ran migrate-incoming on the destination" };
    public Option<string?> MemoryBandwidth { get; } = new("--memory-bandwidth") { Description = "qemu: max-bandwidth of the memory copy in bytes per second (K/M/G = 2^10/2^20/2^30; default: paced by the link the disk copy measured)" };
    public Option<int?> DowntimeLimit { get; } = new("--downtime-limit") { Description = "qemu: downtime-limit of the memory copy in ms (QEMU's default 300)" };
    public Option<bool> Multifd { get; } = new("--multifd") { Description = "qemu: multifd memory channels on both QEMUs (slow links)" };
    public Option<int?> MultifdChannels { get; } = new("--multifd-channels") { Description = "qemu: number of multifd channels (default 2)" };
    public Option<string?> MemoryCompression { get; } = new("--memory-compression") { Description = "qemu: multifd compression none, zlib or zstd (default zstd)" };
    public Option<bool> AutoConverge { get; } = new("--auto-converge") { Description = "qemu: slow the vCPUs while memory is dirtied faster than the link drains it" };
    public Option<bool> MemoryPlaintext { get; } = new("--memory-plaintext") { Description = "qemu: send the guest's memory unencrypted (default: TLS under a key made for this migration, delivered over the pinned channel)" };
    public Option<string?> XenDomain { get; } = new("--xen-domain") { Description = "xen: the domain to migrate" };
    public Option<string?> XenHost { get; } = new("--xen-host") { Description = "xen: the destination dom0, as xl migrate and ssh take it" };
    public Option<string?> XenSsh { get; } = new("--xen-ssh") { Description = "xen: xl migrate -s CMD, e.g. \"ssh -p 2222 -i /root/.ssh/migrate\"" };
    public Option<string?> Xl { get; } = new("--xl") { Description = "xen: the xl executable on the source (default xl)" };
    public Option<string?> XenRemote { get; } = new("--xen-remote") { Description = "xen: how to run xl on the destination (default: the --xen-ssh command or ssh, then the host)" };
    public Option<string?> XenConfig { get; } = new("--xen-config") { Description = "xen: xl migrate -C FILE" };
    public Option<string?> Domain { get; } = new("--domain") { Description = "libvirt: the domain to migrate" };
    public Option<string?> Connect { get; } = new("--connect") { Description = "libvirt: the source's libvirt URI (default: virsh's, qemu:///system as root)" };
    public Option<string?> DestinationConnect { get; } = new("--destination-connect") { Description = "libvirt: the destination's libvirt URI, e.g. qemu+ssh://dst/system" };
    public Option<string?> DestinationSocket { get; } = new("--destination-socket") { Description = "libvirt: TARGET=PATH[,TARGET=PATH...]: the destination shim's socket for each disk (default: the source's path)" };
    public Option<bool> Persistent { get; } = new("--persistent") { Description = "libvirt: define the domain at the destination and undefine it at the source" };
    public Option<bool> MemoryTunnelled { get; } = new("--memory-tunnelled") { Description = "libvirt: send memory inside the libvirt connection (virsh migrate --p2p --tunnelled)" };
    public Option<string?> Virsh { get; } = new("--virsh") { Description = "libvirt: the virsh executable (default virsh)" };

    /// <summary>The config-file section kind: <c>[hypervisor qemu]</c>, <c>[hypervisor xen]</c>.</summary>
    public const string Section = "hypervisor";

    public IEnumerable<Option> All =>
    [
        Kind, QmpSource, QmpDestination, MigrationUri, IncomingUri, NoStartIncoming, MemoryBandwidth, DowntimeLimit,
        Multifd, MultifdChannels, MemoryCompression, AutoConverge, MemoryPlaintext, XenDomain, XenHost, XenSsh, Xl, XenRemote, XenConfig,
        Domain, Connect, DestinationConnect, DestinationSocket, Persistent, MemoryTunnelled, Virsh,
    ];

    public void AddTo(Command command)
    {
        foreach (var o in All) command.Options.Add(o);
    }

    /// <summary>Flags first, then the config file's <c>hypervisor</c> key and <c>[hypervisor KIND]</c> section.</summary>
    public HypervisorOptions Bind(ParseResult r, KeyValueFile file, string cfgName)
    {
        var sections = file.Sections.Where(s => s.Kind == Section).ToList();
        var kindText = r.GetValue(Kind) ?? file.Global.GetValueOrDefault("hypervisor")
            ?? (sections.Count == 1 ? sections[0].Name : "none");
        var kind = HypervisorOptions.ParseKind(kindText);
        foreach (var s in sections)
            if (HypervisorOptions.ParseKind(s.Name) != kind)
                throw new BlockMigrateException($"{cfgName}: section [hypervisor {s.Name}] does not match --hypervisor {kindText}");
        var values = sections.FirstOrDefault().Values ?? new Dictionary<string, string>();
        var given = All.Where(o => o != Kind && IsGiven(r, o)).Select(o => o.Name).ToList();
        switch (kind)
        {
            case HypervisorKind.Qemu:
                KeyValueFile.CheckKeys(cfgName, values, QemuOptionsList.Select(o => o.Name[2..]).ToArray());
                Refuse(given.Intersect(XenOptionsList.Concat(LibvirtOnlyList).Select(o => o.Name)), "qemu");
                return new HypervisorOptions { Kind = kind, Qemu = BindQemu(r, values) };
            case HypervisorKind.Xen:
                KeyValueFile.CheckKeys(cfgName, values, XenOptionsList.Select(o => o.Name[2..]).ToArray());
                Refuse(given.Intersect(QemuOptionsList.Concat(LibvirtOnlyList).Select(o => o.Name)), "xen");
                return new HypervisorOptions { Kind = kind, Xen = BindXen(r, values) };
            case HypervisorKind.Libvirt:
                KeyValueFile.CheckKeys(cfgName, values, LibvirtOptionsList.Select(o => o.Name[2..]).ToArray());
                Refuse(given.Except(LibvirtOptionsList.Select(o => o.Name)), "libvirt");
                return new HypervisorOptions { Kind = kind, Libvirt = BindLibvirt(r, values) };
            default:
                Refuse(given, "none");
                return new HypervisorOptions { Kind = HypervisorKind.None };
        }
    }

    private IEnumerable<Option> QemuOptionsList =>
        [QmpSource, QmpDestination, MigrationUri, IncomingUri, NoStartIncoming, MemoryBandwidth, DowntimeLimit, Multifd, MultifdChannels, MemoryCompression, AutoConverge, MemoryPlaintext];

    private IEnumerable<Option> XenOptionsList => [XenDomain, XenHost, XenSsh, Xl, XenRemote, XenConfig];

    private IEnumerable<Option> LibvirtOnlyList => [Domain, Connect, DestinationConnect, DestinationSocket, Persistent, MemoryTunnelled, Virsh];

    /// <summary>What --hypervisor libvirt takes: its own options and the qemu ones it maps onto virsh migrate.</summary>
    private IEnumerable<Option> LibvirtOptionsList => [.. LibvirtOnlyList, MigrationUri, MemoryBandwidth, AutoConverge, MemoryPlaintext];

    private static void Refuse(IEnumerable<string> options, string kind)
    {
        var list = options.ToList();
        if (list.Count > 0)
            throw new BlockMigrateException($"{string.Join(", ", list)} {(list.Count == 1 ? "does" : "do")} not apply to --hypervisor {kind}");
    }

    private static bool IsGiven(ParseResult r, Option o) => r.GetResult(o) is { Implicit: false };

    private QemuOptions BindQemu(ParseResult r, IReadOnlyDictionary<string, string> file)
    {
        string? Get(Option<string?> o) => r.GetValue(o) ?? file.GetValueOrDefault(o.Name[2..]);
        bool Flag(Option<bool> o) => r.GetValue(o) || Bool(file, o.Name[2..]);
        int? Int(Option<int?> o) => r.GetValue(o) ?? IntOf(file, o.Name[2..]);
        string Need(Option<string?> o) => Get(o) ?? throw new BlockMigrateException(
            $"--hypervisor qemu needs {o.Name} (or '{o.Name[2..]} = ...' under [hypervisor qemu] in --config)");
        var compression = Get(MemoryCompression) ?? "zstd";
        if (compression is not ("none" or "zlib" or "zstd"))
            throw new BlockMigrateException($"bad --memory-compression '{compression}': use none, zlib or zstd");
        var channels = Int(MultifdChannels) ?? 2;
        if (channels is < 1 or > 255) throw new BlockMigrateException($"bad --multifd-channels {channels}: 1 to 255");
        var downtime = Int(DowntimeLimit);
        if (downtime is <= 0) throw new BlockMigrateException($"bad --downtime-limit {downtime}: a positive number of ms");
        return new QemuOptions
        {
            SourceQmp = Need(QmpSource),
            DestinationQmp = Need(QmpDestination),
            MigrationUri = Need(MigrationUri),
            IncomingUri = Get(IncomingUri),
            StartIncoming = !Flag(NoStartIncoming),
            MaxBandwidth = Get(MemoryBandwidth) is { } bw ? ParseBytes(bw) : null,
            DowntimeLimit = downtime is { } ms ? TimeSpan.FromMilliseconds(ms) : null,
            Multifd = Flag(Multifd),
            MultifdChannels = channels,
            MultifdCompression = compression,
            AutoConverge = Flag(AutoConverge),
            MemoryPlaintext = Flag(MemoryPlaintext),
        };
    }

    private XenOptions BindXen(ParseResult r, IReadOnlyDictionary<string, string> file)
    {
        string? Get(Option<string?> o) => r.GetValue(o) ?? file.GetValueOrDefault(o.Name[2..]);
        string Need(Option<string?> o) => Get(o) ?? throw new BlockMigrateException(
            $"--hypervisor xen needs {o.Name} (or '{o.Name[2..]} = ...' under [hypervisor xen] in --config)");
        return new XenOptions
        {
            Domain = Need(XenDomain),
            DestinationHost = Need(XenHost),
            SshCommand = Get(XenSsh),
            XlPath = Get(Xl) ?? "xl",
            RemoteCommand = Get(XenRemote) is { } remote ? remote.Split(' ', StringSplitOptions.RemoveEmptyEntries) : null,
            ConfigFile = Get(XenConfig),
        };
    }

    private LibvirtOptions BindLibvirt(ParseResult r, IReadOnlyDictionary<string, string> file)
    {
        string? Get(Option<string?> o) => r.GetValue(o) ?? file.GetValueOrDefault(o.Name[2..]);
        bool Flag(Option<bool> o) => r.GetValue(o) || Bool(file, o.Name[2..]);
        string Need(Option<string?> o) => Get(o) ?? throw new BlockMigrateException(
            $"--hypervisor libvirt needs {o.Name} (or '{o.Name[2..]} = ...' under [hypervisor libvirt] in --config)");
        return new LibvirtOptions
        {
            Domain = Need(Domain),
            Connect = Get(Connect),
            DestinationConnect = Need(DestinationConnect),
            MigrationUri = Get(MigrationUri),
            DestinationSockets = ParseSockets(Get(DestinationSocket)),
            Persistent = Flag(Persistent),
            MemoryPlaintext = Flag(MemoryPlaintext),
            MemoryTunnelled = Flag(MemoryTunnelled),
            MaxBandwidth = Get(MemoryBandwidth) is { } bw ? ParseBytes(bw) : null,
            AutoConverge = Flag(AutoConverge),
            Virsh = Get(Virsh) ?? "virsh",
        };
    }

    /// <summary><c>vda=/run/a.sock,vdb=/run/b.sock</c> → target → absolute socket path.</summary>
    public static IReadOnlyDictionary<string, string> ParseSockets(string? text)
    {
        var map = new Dictionary<string, string>();
        if (string.IsNullOrWhiteSpace(text)) return map;
        foreach (var item in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var eq = item.IndexOf('=');
            if (eq < 1 || eq == item.Length - 1 || item[(eq + 1)] != '/')
                throw new BlockMigrateException($"bad --destination-socket '{item}': expected TARGET=/absolute/path.sock");
            if (!map.TryAdd(item[..eq], item[(eq + 1)..]))
                throw new BlockMigrateException($"bad --destination-socket: disk {item[..eq]} named twice");
        }
        return map;
    }

    /// <summary>Bytes per second: a number with an optional K, M or G (powers of 1024) and optional "B/s".</summary>
    public static long ParseBytes(string text)
    {
        var t = text.Trim();
        if (t.EndsWith("/s", StringComparison.OrdinalIgnoreCase)) t = t[..^2];
        if (t.EndsWith('B') || t.EndsWith('b')) t = t[..^1];
        if (t.EndsWith('i')) t = t[..^1];
        var scale = t.Length > 0 ? char.ToUpperInvariant(t[^1]) switch { 'K' => 1L << 10, 'M' => 1L << 20, 'G' => 1L << 30, _ => 1L } : 1L;
        if (scale != 1) t = t[..^1];
        // NaN, infinity and products past long.MaxValue are refused, not wrapped or saturated (found by BlockMigrate.Fuzz.Tests)
        if (!double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out var n) || !(n >= 1) || !(n * scale < long.MaxValue))
            throw new BlockMigrateException($"bad --memory-bandwidth '{text}': bytes per second like 12500000, 100M or 1G");
        return (long)(n * scale);
    }

    private static bool Bool(IReadOnlyDictionary<string, string> f, string name) =>
        f.GetValueOrDefault(name) is { } v && (v is "true" or "yes" or "1" ? true : v is "false" or "no" or "0" ? false
            : throw new BlockMigrateException($"config: {name} = {v}: expected true or false"));

    private static int? IntOf(IReadOnlyDictionary<string, string> f, string name) =>
        f.GetValueOrDefault(name) is { } v ? int.TryParse(v, out var n) ? n : throw new BlockMigrateException($"config: {name} = {v} is not a number") : null;

    /// <summary>The hypervisor's figures in the JSON report (null where the hypervisor does not measure them).</summary>
    public static void WriteJson(Utf8JsonWriter w, MigrationReport r)
    {
        var hv = r.HypervisorDetails;
        static void Ms(Utf8JsonWriter w, string name, TimeSpan? t)
        {
            if (t is { } v) w.WriteNumber(name, Math.Round(v.TotalMilliseconds, 1));
            else w.WriteNull(name);
        }
        Ms(w, "hypervisor_downtime_ms", hv?.HypervisorDowntime);
        Ms(w, "guest_downtime_ms", hv?.GuestDowntime);
        Ms(w, "switchover_ms", hv?.Switchover);
        w.WriteNumber("hypervisor_seconds", Math.Round(hv?.Total.TotalSeconds ?? 0, 3));
        w.WriteNumber("memory_bytes", hv?.MemoryBytes ?? 0);
    }

    /// <summary>The hypervisor's lines of the text report (none for --hypervisor none).</summary>
    public static void WriteText(TextWriter o, MigrationReport r)
    {
        if (r.HypervisorDetails is not { } hv || r.Hypervisor == "none") return;
        static string Ms(TimeSpan? t) => t is { } v ? $"{v.TotalMilliseconds:0} ms" : "not reported";
        o.WriteLine($"  guest saw:    {Ms(hv.GuestDowntime)} (source STOP to destination RESUME); {hv.Hypervisor} downtime {Ms(hv.HypervisorDowntime)}");
        o.WriteLine($"  memory:       {Units.Bytes(hv.MemoryBytes)} in {hv.Total.TotalSeconds:0.0} s");
    }
}
