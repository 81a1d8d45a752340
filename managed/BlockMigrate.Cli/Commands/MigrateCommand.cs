using System.CommandLine;
using System.Text.Json;
using BlockMigrate.Cli.Config;
using BlockMigrate.Cli.Report;
using BlockMigrate.Cli.Status;
using BlockMigrate.Engine;
using BlockMigrate.Hypervisors;
using BlockMigrate.Hypervisors.Libvirt;
using BlockMigrate.Network;
using BlockMigrate.Protocol;
using BlockMigrate.Transport;

namespace BlockMigrate.Cli.Commands;

/// <summary>
/// <c>blockmigrate migrate</c>: the source side. Exit 0: committed (and verified, when asked);
/// 1: failed before the hand-over, the source untouched (run again to resume); 2: usage (a flag, a config
/// value or key, a setting that cannot be used; nothing touched); 3: committed, but the DNS update of the
/// network redirection failed; 4: committed, but something failed after the hand-over (nothing is rolled
/// back: the destination owns the VM; if final blocks did not land, running the same command again
/// finishes them); 5: committed, but <c>--verify</c> found the destination different from the source.
/// </summary>
public static class MigrateCommand
{
    public const int DnsFailed = 3, AfterCommitFailed = 4, VerifyFailed = 5;

    /// <summary>The options record's defaults: the one place they are written.</summary>
    private static readonly MigrationOptions Defaults = new() { Disks = [], Host = "" };

    // Every option of migrate, each once: flag, config key (global part of the VM file), default, help.
    internal static readonly Setting<string?> To = new("--to", "to", $"receiver HOST[:PORT] (default port {MigrationOptions.DefaultPort})", t => t, null);
    internal static readonly Setting<string?> Key = new("--key", "key", "this host's key (from 'blockmigrate keygen')", t => t, null);
    internal static readonly Setting<string?> PeerFingerprint = new("--peer-fingerprint", "peer-fingerprint", "the receiver's key fingerprint (SHA256:...)",
        t => KeyFingerprint.Normalize(t) ?? throw new FormatException("expected SHA256:... as printed by keygen"), null);
    internal static readonly Setting<string?> KnownHosts = new("--known-hosts", "known-hosts", "file of 'HOST[:PORT] SHA256:...' lines pinning receivers' keys", t => t, null);
    internal static readonly Setting<double?> Bandwidth = new("--bandwidth", "bandwidth", "cap on the link, bits per second like tc: 20M, 100mbit, 1G",
        t => Rate.ParseBitsPerSecond(t), null);
    internal static readonly Setting<int> MaxDowntime = new("--max-downtime", "max-downtime", "downtime target in ms",
        t => Setting.Int(t), (int)Defaults.MaxDowntime.TotalMilliseconds, $"{Defaults.MaxDowntime.TotalMilliseconds:0}");
    internal static readonly Setting<int> MaxRounds = new("--max-rounds", "max-rounds", "dirty rounds before giving up",
        t => Setting.Int(t), Defaults.MaxRounds, $"{Defaults.MaxRounds}");
    internal static readonly Setting<int?> Timeout = new("--timeout", "timeout", "give up (source untouched) after this many seconds", t => Setting.Int(t), null);
    internal static readonly Setting<int> ConnectTimeout = new("--connect-timeout", "connect-timeout",
        "seconds from connecting to the receiver's welcome before giving up on a silent receiver",
        t => Setting.Int(t), (int)Defaults.ConnectTimeout.TotalSeconds, $"{Defaults.ConnectTimeout.TotalSeconds:0}");
    internal static readonly Setting<CodecChoice> Codec = new("--codec", "codec",
        $"data compression: auto (zstd while the link is slower than 40 MB/s, else LZ4), {Words.Or(CodecChoice.Names.Skip(1).ToList())}",
        t => CodecChoice.Parse(t) ?? throw new FormatException($"expected {CodecChoice.NamesText}"), Defaults.Codec, $"{Defaults.Codec}",
        choices: CodecChoice.Names);
    internal static readonly Setting<SwitchoverMode> Switchover = new("--switchover", "switchover",
        "when the destination VM resumes: gate (once the final dirty set is gated there) or commit (after every final block is written and fsynced)",
        t => t switch { "gate" => SwitchoverMode.Gate, "commit" => SwitchoverMode.Commit, _ => throw new FormatException("expected gate or commit") },
        Defaults.Switchover, Defaults.Switchover.ToString().ToLowerInvariant(), choices: ["gate", "commit"]);
    internal static readonly Setting<string?> Timeline = new("--timeline", "timeline",
        "after the commit, draw the migration over time to FILE (SVG): link rate (disk, memory), throttle, blocks per round, phases, STOP/hand-over/RESUME/commit, the guest's pause; the same series go into --json",
        TimelineFile.Parse, null, valueName: "FILE");
    internal static readonly Switch Plaintext = new("--plaintext", "plaintext", "no TLS, no authentication (the receiver must use it too)");
    internal static readonly Switch Json = new("--json", null, "print the report as one JSON object");
    internal static readonly Switch NoThrottle = new("--no-throttle", null, "never slow the guest's writes (the copy may then not converge)");
    internal static readonly Switch NoCompress = new("--no-compress", null, "send data uncompressed");
    internal static readonly Switch Verify = new("--verify", null, "after the commit, hash every image on both sides while the source is frozen");
    internal static readonly Switch KeepFrozen = new("--keep-source-frozen", null, "with --hypervisor none: leave the source map frozen after the commit");

    /// <summary>The global settings of migrate, in --help order (the hypervisor's and the network's follow).</summary>
    internal static IReadOnlyList<Setting> Settings { get; } =
        [To, Key, PeerFingerprint, KnownHosts, Bandwidth, MaxDowntime, MaxRounds, Json, Plaintext, Timeout, NoThrottle, NoCompress, Codec, Verify,
         KeepFrozen, Switchover, ConnectTimeout, Timeline];

    internal static readonly HypervisorCliOptions Hypervisor = new();

    public static Command Create()
    {
        var disk = new Option<string[]>("--disk") { Description = "NAME=IMAGE:MAP, repeatable (the image file and the shim's dirty map)", AllowMultipleArgumentsPerToken = false };
        var config = new Option<string?>("--config") { Description = "a VM file: 'key = value' lines (to, key, peer-fingerprint, ...) and [disk NAME] sections with image and map" };
        var command = new Command("migrate", "Migrate disks (and, with a hypervisor, the VM) to a receiver") { disk, config };
        foreach (var s in Settings) command.Options.Add(s.Option);
        RedirectionCliOptions.AddTo(command);
        Hypervisor.AddTo(command);
        command.SetAction(async (r, ct) =>
        {
            try
            {
                var b = new Binder(r, config);
                var (options, hypervisorOptions, redirection) = Bind(b, r.GetValue(disk) ?? []);
                if (hypervisorOptions.Libvirt is { } libvirt)
                {
                    // the domain's XML says which disks move (and checks any --disk against it)
                    var shimDisks = await LibvirtShimDisks.ResolveAsync(libvirt, options.Disks, ct);
                    options = options with { Disks = [.. shimDisks.Select(d => d.Disk)] };
                    hypervisorOptions = hypervisorOptions with { Libvirt = libvirt with { ShimDisks = shimDisks } };
                }
                var target = b.Get(To)!;
                var hv = HypervisorFactory.Create(hypervisorOptions);
                var disks = options.Disks;
                var display = new ProgressDisplay(!Console.IsErrorRedirected);
                using var status = StatusFile.TryCreate(target, disks.Select(d => d.Name), hv.Name);
                var network = new NetworkRedirection(redirection, display, status);
                await network.PrepareAsync(ct);
                await using var migration = new Migration(options, hv, display.Logger);
                migration.Progress += display.OnProgress;
                if (status != null) migration.Progress += status.OnProgress;
                migration.HandedOver += network.OnHandedOver;
                migration.SourceStopped = network.OnSourceStopped;
                MigrationReport report;
                try
                {
                    report = await migration.RunAsync(ct);
                }
                catch (AfterHandOverException)
                {
                    // the destination owns the disks (and the VM): redirect its network all the same
                    display.Finish();
                    await network.FinishAsync(ct);
                    throw;
                }
                catch (BlockMigrateException)
                {
                    display.Finish();
                    await network.AbortAsync();
                    throw;
                }
                finally
                {
                    display.Finish();
                }
                await network.FinishAsync(ct);
                if (r.GetValue(Json.Typed)) WriteJson(report, network.Report);
                else WriteText(report, target, network.Report);
                var pictureFailed = false;
                if (b.Get(Timeline) is { } picture)
                    try
                    {
                        TimelineFile.Write(picture, report, target);
                    }
                    catch (BlockMigrateException e)
                    {
                        Console.Error.WriteLine($"blockmigrate: committed, but the timeline was not written: {e.Message}");
                        pictureFailed = true;
                    }
                if (report.Verified == false)
                {
                    Console.Error.WriteLine("blockmigrate: committed, but the destination differs from the source at the freeze");
                    return VerifyFailed;
                }
                if (network.DnsFailed)
                {
                    Console.Error.WriteLine($"blockmigrate: committed, but the DNS update failed ({network.Report.DnsStatus}): " +
                        $"{network.Report.Errors.LastOrDefault(e => e.Step.Contains("dns", StringComparison.OrdinalIgnoreCase))?.Message ?? "see the network section of the report"}");
                    return DnsFailed;
                }
                return pictureFailed ? AfterCommitFailed : CommandRunner.Ok;
            }
            catch (AfterHandOverException e)
            {
                Console.Error.WriteLine($"blockmigrate: {e.Message}");
                return AfterCommitFailed;
            }
            catch (BlockMigrateException e)
            {
                return CommandRunner.Fail(e.Message);
            }
        });
        return command;
    }

    /// <summary>
    /// Binds and validates everything migrate needs (flags, then the VM file, then the defaults). Every
    /// problem is a <see cref="UsageException"/>: nothing has been touched yet.
    /// </summary>
    internal static (MigrationOptions Options, HypervisorOptions Hypervisor, RedirectionOptions? Redirection) Bind(Binder b, IReadOnlyList<string> diskFlags)
    {
        try
        {
            var file = b.File;
            b.CheckKeys(file.Global, [.. Settings, Hypervisor.Kind]);
            var disks = diskFlags.Select(ParseDisk).ToList();
            foreach (var (kind, name, values) in file.Sections)
            {
                if (kind is RedirectionCliOptions.Section or HypervisorCliOptions.Section) continue;
                if (kind != "disk") throw new UsageException($"{b.FileName}: unknown section [{kind} {name}]");
                b.CheckKeys(values, [], $"[disk {name}]", "image", "map");
                disks.Add(new DiskSpec(name, values.GetValueOrDefault("image") ?? throw new UsageException($"{b.FileName}: [disk {name}] has no image"),
                    values.GetValueOrDefault("map") ?? $"/dev/shm/blockmigrate/{name}.map"));
            }
            var hypervisor = Hypervisor.Bind(b);
            if (disks.Count == 0 && hypervisor.Kind != HypervisorKind.Libvirt) // libvirt: the domain's XML names them
                throw new UsageException("no disks (--disk NAME=IMAGE:MAP or [disk NAME] sections in --config)");
            var target = b.Get(To) ?? throw new UsageException("no receiver (--to HOST[:PORT])");
            var (host, port) = Endpoint.ParseHostPort(target, MigrationOptions.DefaultPort);
            var plaintext = b.Get(Plaintext);
            var fingerprint = b.Get(PeerFingerprint) ?? (b.Get(KnownHosts) is { } kh ? TrustList.LookupKnownHost(kh, host, port) : null);
            var redirection = RedirectionCliOptions.Bind(b, disks);
            var options = new MigrationOptions
            {
                Disks = disks,
                Host = host,
                Port = port,
                KeyPath = b.Get(Key),
                PeerFingerprint = fingerprint,
                Plaintext = plaintext,
                BandwidthBytesPerSecond = b.Get(Bandwidth),
                MaxDowntime = TimeSpan.FromMilliseconds(b.Get(MaxDowntime)),
                MaxRounds = b.Get(MaxRounds),
                Throttle = !b.Get(NoThrottle),
                Compress = !b.Get(NoCompress),
                Codec = b.Get(Codec),
                Verify = b.Get(Verify),
                KeepSourceFrozen = b.Get(KeepFrozen),
                Switchover = b.Get(Switchover),
                Timeout = b.Get(Timeout) is { } s ? TimeSpan.FromSeconds(s) : null,
                ConnectTimeout = TimeSpan.FromSeconds(b.Get(ConnectTimeout)),
                RecordTimeline = b.Get(Timeline) != null,
            };
            if (options.Validate() is { Count: > 0 } problems) throw new UsageException(problems);
            return (options, hypervisor, redirection);
        }
        catch (BlockMigrateException e)
        {
            // the shared parsers (endpoints, rates, the known-hosts file) say what is wrong; here it is a usage error
            throw new UsageException(e.Message);
        }
    }

    public static DiskSpec ParseDisk(string text)
    {
        var eq = text.IndexOf('=');
        var colon = text.LastIndexOf(':');
        if (eq <= 0 || colon < eq + 2 || colon == text.Length - 1)
            throw new UsageException($"bad --disk '{text}': expected NAME=IMAGE:MAP");
        return new DiskSpec(text[..eq], text[(eq + 1)..colon], text[(colon + 1)..]);
    }

    private static void WriteText(MigrationReport r, string target, RedirectionReport net)
    {
        var o = Console.Out;
        o.WriteLine($"migrated {string.Join(", ", r.Disks)} to {target} in {r.TotalSeconds:0.00} s{(r.Resumed ? " (resumed)" : "")}");
        o.WriteLine(r.Switchover == SwitchoverMode.Gate && !r.FinishedHandOver
            ? $"  downtime:     {r.DowntimeMs:0} ms (freeze to hand-over: {r.FinalBlocks} blocks in the final set, gated at the destination; committed {r.CommitMs:0} ms after the freeze{Estimated(r)})"
            : $"  downtime:     {r.DowntimeMs:0} ms (freeze to commit; {r.FinalBlocks} blocks in the final set{Estimated(r)})");
        o.WriteLine($"  on the wire:  {Units.Bytes(r.BytesOnWire)} for {Units.Bytes(r.BytesOfData)} of data and {Units.Bytes(r.BytesZero)} of zeros" +
            $" (compressed: {string.Join(", ", BlockCodec.All.Select(c => $"{Units.Bytes(r.BytesWith(c))} with {c.DisplayName}"))})");
        if (r.SeedExchangeBytes > 0)
            o.WriteLine($"  seeds:        {r.BlocksFromSeeds} blocks written at the destination from its seeds, {r.BlocksSent} sent as data; hash exchange {Units.Bytes(r.SeedExchangeBytes)}");
        HypervisorCliOptions.WriteText(o, r);
        var deferred = r.BlocksDeferred > 0 ? $"; {r.BlocksDeferred} deferred to a later round (written again before they were read)" : "";
        o.WriteLine(r.ReturnBaseBlocks > 0
            ? $"  blocks:       {r.BlocksSent} sent as data, {r.ReturnBaseBlocks} taken from the return base (the receiver's image as of the last hand-over){deferred}"
            : $"  blocks:       {r.BlocksSent} sent as data{deferred}");
        o.WriteLine($"  rounds:       {r.Rounds} after the bulk copy; " + (r.ThrottleTightestBytesPerSecond == 0 ? "never throttled"
            : $"throttled {r.ThrottledSeconds:0.0} s, writes capped down to {Units.Bytes((long)r.ThrottleTightestBytesPerSecond)}/s (writes delayed {r.WritesDelayedSeconds:0.0} s)"));
        o.WriteLine($"  verified:     {r.Verified switch { true => "yes, SHA-256 of every image equal on both sides", false => "NO: the images differ", null => "not requested (--verify)" }}");
        if (net.Redirector != "none") o.WriteLine($"  network:      {NetworkSummary.Describe(net)}");
    }

    private static string Estimated(MigrationReport r) => r.DowntimeEstimateMs is { } e ? $"; estimated {e:0} ms" : "";

    private static void WriteJson(MigrationReport r, RedirectionReport net)
    {
        using var stdout = Console.OpenStandardOutput();
        // relaxed escaping: "tunnel+dns" stays readable (the output is not HTML)
        using (var w = new Utf8JsonWriter(stdout, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteNumber("total_seconds", Math.Round(r.TotalSeconds, 3));
            w.WriteNumber("downtime_ms", Math.Round(r.DowntimeMs, 1));
            if (r.DowntimeEstimateMs is { } est) w.WriteNumber("downtime_estimate_ms", Math.Round(est, 1));
            else w.WriteNull("downtime_estimate_ms");
            w.WriteNumber("bytes_on_wire", r.BytesOnWire);
            w.WriteNumber("bytes_on_wire_after_bulk", r.BytesOnWireAfterBulk);
            w.WriteNumber("bytes_of_data", r.BytesOfData);
            w.WriteNumber("bytes_zero", r.BytesZero);
            foreach (var c in BlockCodec.All) w.WriteNumber($"bytes_{c.Name}", r.BytesWith(c));
            w.WriteNumber("bytes_to_send", r.BytesToSend);
            w.WriteNumber("blocks_from_seeds", r.BlocksFromSeeds);
            w.WriteNumber("blocks_sent", r.BlocksSent);
            w.WriteNumber("blocks_deferred", r.BlocksDeferred);
            w.WriteNumber("seed_exchange_bytes", r.SeedExchangeBytes);
            w.WriteNumber("rounds", r.Rounds);
            w.WriteNumber("throttled_seconds", Math.Round(r.ThrottledSeconds, 3));
            w.WriteNumber("writes_delayed_seconds", Math.Round(r.WritesDelayedSeconds, 3));
            w.WriteNumber("throttle_tightest_bytes_per_second", r.ThrottleTightestBytesPerSecond);
            if (r.Verified is { } v) w.WriteBoolean("verified", v);
            else w.WriteNull("verified");
            w.WriteBoolean("resumed", r.Resumed);
            w.WriteNumber("return_base_blocks", r.ReturnBaseBlocks);
            w.WriteNumber("frozen_at_unix_ms", r.FrozenAtUnixMs);
            w.WriteNumber("final_blocks", r.FinalBlocks);
            w.WriteString("switchover", r.SwitchoverName);
            if (r.CommitMs is { } commitMs) w.WriteNumber("commit_ms", Math.Round(commitMs, 1));
            else w.WriteNull("commit_ms");
            w.WriteString("hypervisor", r.Hypervisor);
            HypervisorCliOptions.WriteJson(w, r);
            w.WriteStartArray("disks");
            foreach (var d in r.Disks) w.WriteStringValue(d);
            w.WriteEndArray();
            if (r.Timeline is { } timeline)
            {
                w.WritePropertyName("timeline");
                TimelineJson.Write(w, timeline);
            }
            w.WritePropertyName("network");
            JsonSerializer.Serialize(w, net, RedirectionJsonContext.Default.RedirectionReport);
            w.WriteEndObject();
        }
        stdout.WriteByte((byte)'\n');
    }
}
