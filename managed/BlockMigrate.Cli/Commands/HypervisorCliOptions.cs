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
    private static readonly QemuOptions QemuDefaults = new() { SourceQmp = "", DestinationQmp = "", MigrationUri = "" };
    private static readonly XenOptions XenDefaults = new() { Domain = "", DestinationHost = "" };

    /// <summary>The config-file section kind: <c>[hypervisor qemu]</c>, <c>[hypervisor xen]</c>.</summary>
    public const string Section = "hypervisor";

    private static Setting<string?> Text(string flag, string help, string? defaultText = null) =>
        new(flag, flag[2..], help, t => t, null, defaultText, Section);

    private static Setting<int?> Int(string flag, string help, int? @default, string? defaultText) =>
        new(flag, flag[2..], help, t => Setting.Int(t), @default, defaultText, Section);

    private static Switch Flag(string flag, string help) => new(flag, flag[2..], help, Section);

    /// <summary>The global key <c>hypervisor</c>; the kind may also follow from a lone [hypervisor KIND] section.</summary>
    public Setting<string?> Kind { get; } = new("--hypervisor", "hypervisor", "who moves memory and devices: qemu (or kvm), libvirt, xen, or none (disk only; the default)", t => t, null);
    public Setting<string?> QmpSource { get; } = Text("--qmp-source", "qemu: the source QEMU's QMP monitor, a unix socket path or tcp:HOST:PORT");
    public Setting<string?> QmpDestination { get; } = Text("--qmp-destination", "qemu: the destination QEMU's QMP monitor (started with -incoming defer -S)");
    public Setting<string?> MigrationUri { get; } = Text("--migration-uri", "qemu: where the source sends memory, e.g. tcp:DSTHOST:4444");
    public Setting<string?> IncomingUri { get; } = Text("--incoming-uri", "qemu: what the destination listens on", "the migration URI");
    public Switch NoStartIncoming { get; } = Flag("--no-start-incoming", "qemu: the admin already ran migrate-incoming on the destination");
    public Setting<long?> MemoryBandwidth { get; } = new("--memory-bandwidth", "memory-bandwidth",
        "qemu: max-bandwidth of the memory copy in bytes per second (K/M/G = 2^10/2^20/2^30)", t => ParseBytes(t), null,
        "paced by the link the disk copy measured", Section);
    public Setting<int?> DowntimeLimit { get; } = Int("--downtime-limit", "qemu: downtime-limit of the memory copy in ms", null,
        $"{QemuHypervisor.AimedDowntimeMs}, rising to {QemuHypervisor.MaxRelaxedDowntimeMs} while the copy does not converge (link measured, and KVM or QEMU 9.0+; else QEMU's {QemuOptions.QemuDefaultDowntimeLimit.TotalMilliseconds:0})");
    public Switch Multifd { get; } = Flag("--multifd", "qemu: multifd memory channels on both QEMUs (slow links)");
    public Setting<int?> MultifdChannels { get; } = Int("--multifd-channels", "qemu: number of multifd channels", QemuDefaults.MultifdChannels,
        $"{QemuDefaults.MultifdChannels}");
    public Setting<string?> MemoryCompression { get; } = new("--memory-compression", "memory-compression",
        $"qemu: multifd compression {Words.Or(QemuOptions.MultifdCompressions)}", t => Setting.OneOf(t, QemuOptions.MultifdCompressions),
        QemuDefaults.MultifdCompression, QemuDefaults.MultifdCompression, Section, choices: QemuOptions.MultifdCompressions);
    public Switch AutoConverge { get; } = Flag("--auto-converge", "qemu: slow the vCPUs while memory is dirtied faster than the link drains it");
    public Switch Postcopy { get; } = Flag("--postcopy",
        "qemu: post-copy for memory after its first pass: the guest resumes at the destination at once and pulls the pages left; a link lost after that loses the VM (not with --multifd)");
    public Switch MemoryPlaintext { get; } = Flag("--memory-plaintext", "qemu: send the guest's memory unencrypted (default: TLS under a key made for this migration, delivered over the pinned channel)");
    public Setting<string?> XenDomain { get; } = Text("--xen-domain", "xen: the domain to migrate");
    public Setting<string?> XenHost { get; } = Text("--xen-host", "xen: the destination dom0, as xl migrate and ssh take it");
    public Setting<string?> XenSsh { get; } = Text("--xen-ssh", "xen: xl migrate -s CMD, e.g. \"ssh -p 2222 -i /root/.ssh/migrate\"");
    public Setting<string?> Xl { get; } = Text("--xl", "xen: the xl executable on the source", XenDefaults.XlPath);
    public Setting<string?> XenRemote { get; } = Text("--xen-remote", "xen: how to run xl on the destination", "the --xen-ssh command or ssh, then the host");
    public Setting<string?> XenConfig { get; } = Text("--xen-config", "xen: xl migrate -C FILE");
    public Setting<string?> Domain { get; } = Text("--domain", "libvirt: the domain to migrate");
    public Setting<string?> Connect { get; } = Text("--connect", "libvirt: the source's libvirt URI", "virsh's, qemu:///system as root");
    public Setting<string?> DestinationConnect { get; } = Text("--destination-connect", "libvirt: the destination's libvirt URI, e.g. qemu+ssh://dst/system");
    public Setting<string?> DestinationSocket { get; } = Text("--destination-socket", "libvirt: TARGET=PATH[,TARGET=PATH...]: the destination shim's socket for each disk", "the source's path");
    public Switch Persistent { get; } = Flag("--persistent", "libvirt: define the domain at the destination and undefine it at the source");
    public Switch MemoryTunnelled { get; } = Flag("--memory-tunnelled", "libvirt: send memory inside the libvirt connection (virsh migrate in p2p tunnelled mode)");
    public Setting<string?> Virsh { get; } = Text("--virsh", "libvirt: the virsh executable", "virsh");
    public Setting<string?> DiskConfigDir { get; } = Text("--disk-config-dir",
        "libvirt: the shim's disk files (NAME.conf: IMAGE=, SOCKET=, DIRTYMAP=), how the domain's disk sockets become --disk entries", LibvirtShimDisks.DefaultConfigDir);

    public IEnumerable<Setting> All => [Kind, .. QemuSettings, .. XenSettings, .. LibvirtOnlySettings];

    internal IEnumerable<Setting> QemuSettings =>
        [QmpSource, QmpDestination, MigrationUri, IncomingUri, NoStartIncoming, MemoryBandwidth, DowntimeLimit, Multifd, MultifdChannels, MemoryCompression, AutoConverge, Postcopy, MemoryPlaintext];

    internal IEnumerable<Setting> XenSettings => [XenDomain, XenHost, XenSsh, Xl, XenRemote, XenConfig];

    internal IEnumerable<Setting> LibvirtOnlySettings => [Domain, Connect, DestinationConnect, DestinationSocket, Persistent, MemoryTunnelled, Virsh, DiskConfigDir];

    /// <summary>What --hypervisor libvirt takes: its own settings and the qemu ones it maps onto virsh migrate.</summary>
    internal IEnumerable<Setting> LibvirtSettings => [.. LibvirtOnlySettings, MigrationUri, MemoryBandwidth, AutoConverge, MemoryPlaintext];

    public void AddTo(Command command)
    {
        foreach (var s in All) command.Options.Add(s.Option);
    }

    /// <summary>Flags first, then the config file's <c>hypervisor</c> key and <c>[hypervisor KIND]</c> section; validated.</summary>
    public HypervisorOptions Bind(Binder b)
    {
        var sections = b.File.Sections.Where(s => s.Kind == Section).ToList();
        var kindText = b.Get(Kind) ?? (sections.Count == 1 ? sections[0].Name : "none");
        var kind = Usage(() => HypervisorOptions.ParseKind(kindText));
        foreach (var s in sections)
            if (Usage(() => HypervisorOptions.ParseKind(s.Name)) != kind)
                throw new UsageException($"{b.FileName}: section [hypervisor {s.Name}] does not match --hypervisor {kindText}");
        var values = sections.FirstOrDefault().Values ?? new Dictionary<string, string>();
        var given = All.Where(o => o != Kind && b.IsGiven(o)).Select(o => o.Flag).ToList();
        var options = kind switch
        {
            HypervisorKind.Qemu => Check(b, values, QemuSettings, given, [.. XenSettings, .. LibvirtOnlySettings], "qemu") with { Kind = kind, Qemu = BindQemu(b, values) },
            HypervisorKind.Xen => Check(b, values, XenSettings, given, [.. QemuSettings, .. LibvirtOnlySettings], "xen") with { Kind = kind, Xen = BindXen(b, values) },
            HypervisorKind.Libvirt => Check(b, values, LibvirtSettings, given, All.Except([Kind, .. LibvirtSettings]), "libvirt") with { Kind = kind, Libvirt = BindLibvirt(b, values) },
            _ => Check(b, values, [], given, [.. QemuSettings, .. XenSettings, .. LibvirtOnlySettings], "none"),
        };
        if (options.Validate() is { Count: > 0 } problems) throw new UsageException(problems);
        return options;
    }

    private static HypervisorOptions Check(Binder b, IReadOnlyDictionary<string, string> values, IEnumerable<Setting> mine, List<string> given,
        IEnumerable<Setting> others, string kind)
    {
        if (mine.Any()) b.CheckKeys(values, mine);
        var refused = given.Intersect(kind == "none" ? given : others.Select(o => o.Flag)).ToList();
        if (refused.Count > 0)
            throw new UsageException($"{string.Join(", ", refused)} {(refused.Count == 1 ? "does" : "do")} not apply to --hypervisor {kind}");
        return new HypervisorOptions();
    }

    private static T Usage<T>(Func<T> f)
    {
        try
        {
            return f();
        }
        catch (BlockMigrateException e)
        {
            throw new UsageException(e.Message);
        }
    }

    /// <summary>A setting the hypervisor cannot do without.</summary>
    private static string Need(Binder b, Setting<string?> s, IReadOnlyDictionary<string, string> file, string kind) =>
        b.Get(s, file) ?? throw new UsageException($"--hypervisor {kind} needs {s.Flag} (or '{s.Key} = ...' under [hypervisor {kind}] in --config)");

    private QemuOptions BindQemu(Binder b, IReadOnlyDictionary<string, string> file)
    {
        string Need(Setting<string?> s) => HypervisorCliOptions.Need(b, s, file, "qemu");
        return new QemuOptions
        {
            SourceQmp = Need(QmpSource),
            DestinationQmp = Need(QmpDestination),
            MigrationUri = Need(MigrationUri),
            IncomingUri = b.Get(IncomingUri, file),
            StartIncoming = !b.Get(NoStartIncoming, file),
            MaxBandwidth = b.Get(MemoryBandwidth, file),
            DowntimeLimit = b.Get(DowntimeLimit, file) is { } ms ? TimeSpan.FromMilliseconds(ms) : null,
            Multifd = b.Get(Multifd, file),
            MultifdChannels = b.Get(MultifdChannels, file) ?? QemuDefaults.MultifdChannels,
            MultifdCompression = b.Get(MemoryCompression, file) ?? QemuDefaults.MultifdCompression,
            AutoConverge = b.Get(AutoConverge, file),
            Postcopy = b.Get(Postcopy, file),
            MemoryPlaintext = b.Get(MemoryPlaintext, file),
        };
    }

    private XenOptions BindXen(Binder b, IReadOnlyDictionary<string, string> file)
    {
        string Need(Setting<string?> s) => HypervisorCliOptions.Need(b, s, file, "xen");
        return new XenOptions
        {
            Domain = Need(XenDomain),
            DestinationHost = Need(XenHost),
            SshCommand = b.Get(XenSsh, file),
            XlPath = b.Get(Xl, file) ?? XenDefaults.XlPath,
            RemoteCommand = b.Get(XenRemote, file) is { } remote ? remote.Split(' ', StringSplitOptions.RemoveEmptyEntries) : null,
            ConfigFile = b.Get(XenConfig, file),
        };
    }

    private LibvirtOptions BindLibvirt(Binder b, IReadOnlyDictionary<string, string> file)
    {
        string Need(Setting<string?> s) => HypervisorCliOptions.Need(b, s, file, "libvirt");
        return new LibvirtOptions
        {
            Domain = Need(Domain),
            Connect = b.Get(Connect, file),
            DestinationConnect = Need(DestinationConnect),
            MigrationUri = b.Get(MigrationUri, file),
            DestinationSockets = Usage(() => ParseSockets(b.Get(DestinationSocket, file))),
            Persistent = b.Get(Persistent, file),
            MemoryPlaintext = b.Get(MemoryPlaintext, file),
            MemoryTunnelled = b.Get(MemoryTunnelled, file),
            MaxBandwidth = b.Get(MemoryBandwidth, file),
            AutoConverge = b.Get(AutoConverge, file),
            Virsh = b.Get(Virsh, file) ?? "virsh",
            DiskConfigDir = b.Get(DiskConfigDir, file) ?? LibvirtShimDisks.DefaultConfigDir,
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
        if (hv?.MemoryWireBytes is { } onWire) w.WriteNumber("memory_wire_bytes", onWire);
        else w.WriteNull("memory_wire_bytes");
        // QEMU post-copy (--postcopy): null when the memory moved by pre-copy alone
        if (hv?.PostcopyAfter is { } after) w.WriteNumber("postcopy_after_seconds", Math.Round(after.TotalSeconds, 3));
        else w.WriteNull("postcopy_after_seconds");
        if (hv?.PostcopyBytes is { } pb) w.WriteNumber("postcopy_bytes", pb);
        else w.WriteNull("postcopy_bytes");
        Ms(w, "postcopy_tail_ms", hv?.PostcopyTail);
    }

    /// <summary>The hypervisor's lines of the text report (none for --hypervisor none).</summary>
    public static void WriteText(TextWriter o, MigrationReport r)
    {
        if (r.HypervisorDetails is not { } hv || r.Hypervisor == "none") return;
        static string Ms(TimeSpan? t) => t is { } v ? $"{v.TotalMilliseconds:0} ms" : "not reported";
        o.WriteLine($"  guest saw:    {Ms(hv.GuestDowntime)} (source STOP to destination RESUME); {hv.Hypervisor} downtime {Ms(hv.HypervisorDowntime)}");
        var onWire = hv.MemoryWireBytes is { } b ? $" ({Units.Bytes(b)} on the wire)" : "";
        o.WriteLine($"  memory:       {Units.Bytes(hv.MemoryBytes)}{onWire} in {hv.Total.TotalSeconds:0.0} s");
        if (hv.PostcopyAfter is { } after)
            o.WriteLine($"  post-copy:    from {after.TotalSeconds:0.0} s into the memory copy; {(hv.PostcopyBytes is { } pb ? Units.Bytes(pb) : "?")} sent " +
                        $"after the switch, the last {Ms(hv.PostcopyTail)} while the guest already ran at the destination");
    }
}
