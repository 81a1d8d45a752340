using System.CommandLine;
using System.Text.Json;
using BlockMigrate.Cli.Config;
using BlockMigrate.Cli.Status;
using BlockMigrate.Engine;
using BlockMigrate.Hypervisors;
using BlockMigrate.Network;
using BlockMigrate.Protocol;
using BlockMigrate.Transport;

namespace BlockMigrate.Cli.Commands;

/// <summary>
/// <c>blockmigrate migrate</c>: the source side. Exit 0: committed (and verified, when asked);
/// 1: failed before the hand-over, the source untouched (run again to resume); 2: usage; 3: committed, but
/// the DNS update of the network redirection failed; 4: committed but the verification found a difference,
/// or something else failed after the hand-over (nothing is rolled back: the destination owns the VM;
/// if final blocks did not land, running the same command again finishes them).
/// </summary>
public static class MigrateCommand
{
    public const int DnsFailed = 3, VerifyFailed = 4, AfterCommitFailed = 4;

    public static Command Create()
    {
        var disk = new Option<string[]>("--disk") { Description = "NAME=IMAGE:MAP, repeatable (the image file and the shim's dirty map)", AllowMultipleArgumentsPerToken = false };
        var config = new Option<string?>("--config") { Description = "a VM file: 'key = value' lines (to, key, peer-fingerprint, ...) and [disk NAME] sections with image and map" };
        var to = new Option<string?>("--to") { Description = $"receiver HOST[:PORT] (default port {MigrationOptions.DefaultPort})" };
        var key = new Option<string?>("--key") { Description = "this host's key (from 'blockmigrate keygen')" };
        var peer = new Option<string?>("--peer-fingerprint") { Description = "the receiver's key fingerprint (SHA256:...)" };
        var knownHosts = new Option<string?>("--known-hosts") { Description = "file of 'HOST[:PORT] SHA256:...' lines pinning receivers' keys" };
        var bandwidth = new Option<string?>("--bandwidth") { Description = "cap on the link, bits per second like tc: 20M, 100mbit, 1G" };
        var maxDowntime = new Option<int?>("--max-downtime") { Description = "downtime target in ms (default 300)" };
        var maxRounds = new Option<int?>("--max-rounds") { Description = "dirty rounds before giving up (default 30)" };
        var hypervisor = new HypervisorCliOptions();
        var json = new Option<bool>("--json") { Description = "print the report as one JSON object" };
        var plaintext = new Option<bool>("--plaintext") { Description = "no TLS, no authentication (the receiver must use it too)" };
        var timeout = new Option<int?>("--timeout") { Description = "give up (source untouched) after this many seconds" };
        var noThrottle = new Option<bool>("--no-throttle") { Description = "never slow the guest's writes (the copy may then not converge)" };
        var noCompress = new Option<bool>("--no-compress") { Description = "send data uncompressed" };
        var codec = new Option<string?>("--codec") { Description = $"data compression: auto (zstd while the link is slower than 40 MB/s, else LZ4; default), {string.Join(" or ", CodecChoice.Names.Skip(1))}" };
        codec.AcceptOnlyFromAmong([.. CodecChoice.Names]);
        var verify = new Option<bool>("--verify") { Description = "after the commit, hash every image on both sides while the source is frozen" };
        var switchover = new Option<string?>("--switchover") { Description = "when the destination VM resumes: gate (once the final dirty set is gated there; default) or commit (after every final block is written and fsynced)" };
        switchover.AcceptOnlyFromAmong("gate", "commit");
        var keepFrozen = new Option<bool>("--keep-source-frozen") { Description = "with --hypervisor none: leave the source map frozen after the commit" };
        var command = new Command("migrate", "Migrate disks (and, with a hypervisor, the VM) to a receiver")
        {
            disk, config, to, key, peer, knownHosts, bandwidth, maxDowntime, maxRounds, json, plaintext, timeout,
            noThrottle, noCompress, codec, verify, keepFrozen, switchover,
        };
        var connectTimeout = new Option<int?>("--connect-timeout")
        {
            Description = $"seconds from connecting to the receiver's welcome before giving up on a silent receiver (default {MigrationOptions.DefaultConnectTimeout.TotalSeconds:0})",
        };
        command.Options.Add(connectTimeout);
        RedirectionCliOptions.AddTo(command);
        hypervisor.AddTo(command);
        command.SetAction(async (r, ct) =>
        {
            try
            {
                var file = r.GetValue(config) is { } path ? KeyValueFile.Load(path) : new KeyValueFile();
                var cfgName = r.GetValue(config) ?? "";
                KeyValueFile.CheckKeys(cfgName, file.Global, "to", "key", "peer-fingerprint", "known-hosts", "bandwidth", "max-downtime",
                    "max-rounds", "hypervisor", "plaintext", "timeout", "switchover", "codec", "connect-timeout");
                string? Get(Option<string?> o, string name) => r.GetValue(o) ?? file.Global.GetValueOrDefault(name);
                var disks = new List<DiskSpec>();
                foreach (var d in r.GetValue(disk) ?? []) disks.Add(ParseDisk(d));
                foreach (var (kind, name, values) in file.Sections)
                {
                    if (kind == RedirectionCliOptions.Section) continue;
                    if (kind == HypervisorCliOptions.Section) continue;
                    if (kind != "disk") throw new BlockMigrateException($"{cfgName}: unknown section [{kind} {name}]");
                    KeyValueFile.CheckKeys(cfgName, values, "image", "map");
                    disks.Add(new DiskSpec(name, values.GetValueOrDefault("image") ?? throw new BlockMigrateException($"{cfgName}: [disk {name}] has no image"),
                        values.GetValueOrDefault("map") ?? $"/dev/shm/blockmigrate/{name}.map"));
                }
                if (disks.Count == 0) throw new BlockMigrateException("no disks (--disk NAME=IMAGE:MAP or [disk NAME] sections in --config)");
                var target = Get(to, "to") ?? throw new BlockMigrateException("no receiver (--to HOST[:PORT])");
                var (host, port) = Endpoint.ParseHostPort(target, MigrationOptions.DefaultPort);
                var isPlain = r.GetValue(plaintext) || file.Global.GetValueOrDefault("plaintext") is "true" or "yes" or "1";
                var fingerprint = Get(peer, "peer-fingerprint") is { } fp
                    ? KeyFingerprint.Normalize(fp) ?? throw new BlockMigrateException($"bad --peer-fingerprint '{fp}' (expected SHA256:... as printed by keygen)")
                    : Get(knownHosts, "known-hosts") is { } kh ? TrustList.LookupKnownHost(kh, host, port) : null;
                if (!isPlain && fingerprint == null)
                    throw new BlockMigrateException($"receiver {host}:{port} has no pinned key: give --peer-fingerprint or list it in --known-hosts");
                var hv = HypervisorFactory.Create(hypervisor.Bind(r, file, cfgName));
                var redirection = RedirectionCliOptions.Bind(r, file, cfgName, disks);
                var options = new MigrationOptions
                {
                    Disks = disks,
                    Host = host,
                    Port = port,
                    KeyPath = Get(key, "key"),
                    PeerFingerprint = fingerprint,
                    Plaintext = isPlain,
                    BandwidthBytesPerSecond = Get(bandwidth, "bandwidth") is { } bw ? Rate.ParseBitsPerSecond(bw) : null,
                    MaxDowntime = TimeSpan.FromMilliseconds(r.GetValue(maxDowntime) ?? IntOf(file, "max-downtime") ?? 300),
                    MaxRounds = r.GetValue(maxRounds) ?? IntOf(file, "max-rounds") ?? 30,
                    Throttle = !r.GetValue(noThrottle),
                    Compress = !r.GetValue(noCompress),
                    Codec = (r.GetValue(codec) ?? file.Global.GetValueOrDefault("codec") ?? CodecChoice.AutoName) is var codecName
                        && CodecChoice.Parse(codecName) is { } choice ? choice
                        : throw new BlockMigrateException($"{cfgName}: codec = {codecName}: expected {CodecChoice.NamesText}"),
                    Verify = r.GetValue(verify),
                    KeepSourceFrozen = r.GetValue(keepFrozen),
                    Switchover = (r.GetValue(switchover) ?? file.Global.GetValueOrDefault("switchover") ?? "gate") switch
                    {
                        "gate" => SwitchoverMode.Gate,
                        "commit" => SwitchoverMode.Commit,
                        var other => throw new BlockMigrateException($"{cfgName}: switchover = {other}: expected gate or commit"),
                    },
                    Timeout = (r.GetValue(timeout) ?? IntOf(file, "timeout")) is { } s ? TimeSpan.FromSeconds(s) : null,
                    ConnectTimeout = (r.GetValue(connectTimeout) ?? IntOf(file, "connect-timeout")) is { } c
                        ? c > 0 ? TimeSpan.FromSeconds(c) : throw new BlockMigrateException("--connect-timeout: expected a positive number of seconds")
                        : MigrationOptions.DefaultConnectTimeout,
                };
                var display = new ProgressDisplay(!Console.IsErrorRedirected);
                using var status = StatusFile.TryCreate(target, disks.Select(d => d.Name), hv.Name);
                var network = new NetworkRedirection(redirection, display, status);
                await network.PrepareAsync(ct);
                await using var migration = new Migration(options, hv);
                migration.Log += display.OnLog;
                migration.Progress += display.OnProgress;
                if (status != null) migration.Progress += status.OnProgress;
                migration.Committed += network.OnCommitted;
                MigrationReport report;
                try
                {
                    report = await migration.RunAsync(ct);
                }
                catch (AfterCommitException)
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
                if (r.GetValue(json)) WriteJson(report, network.Report);
                else WriteText(report, target, network.Report);
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
                return CommandRunner.Ok;
            }
            catch (AfterCommitException e)
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

    private static int? IntOf(KeyValueFile f, string name) =>
        f.Global.GetValueOrDefault(name) is { } v ? int.TryParse(v, out var n) ? n : throw new BlockMigrateException($"config: {name} = {v} is not a number") : null;

    public static DiskSpec ParseDisk(string text)
    {
        var eq = text.IndexOf('=');
        var colon = text.LastIndexOf(':');
        if (eq <= 0 || colon < eq + 2 || colon == text.Length - 1)
            throw new BlockMigrateException($"bad --disk '{text}': expected NAME=IMAGE:MAP");
        return new DiskSpec(text[..eq], text[(eq + 1)..colon], text[(colon + 1)..]);
    }

    private static void WriteText(MigrationReport r, string target, RedirectionReport net)
    {
        var o = Console.Out;
        o.WriteLine($"migrated {string.Join(", ", r.Disks)} to {target} in {r.TotalSeconds:0.00} s{(r.Resumed ? " (resumed)" : "")}");
        o.WriteLine(r.Switchover == "gate"
            ? $"  downtime:     {r.DowntimeMs:0} ms (freeze to hand-over: {r.FinalBlocks} blocks in the final set, gated at the destination; committed {r.CommitMs:0} ms after the freeze)"
            : $"  downtime:     {r.DowntimeMs:0} ms (freeze to commit; {r.FinalBlocks} blocks in the final set)");
        o.WriteLine($"  on the wire:  {Units.Bytes(r.BytesOnWire)} for {Units.Bytes(r.BytesOfData)} of data and {Units.Bytes(r.BytesZero)} of zeros" +
            $" (compressed: {string.Join(", ", BlockCodec.All.Select(c => $"{Units.Bytes(r.BytesWith(c))} with {c.DisplayName}"))})");
        HypervisorCliOptions.WriteText(o, r);
        o.WriteLine($"  rounds:       {r.Rounds} after the bulk copy; throttled {r.ThrottledSeconds:0.0} s (writes delayed {r.WritesDelayedSeconds:0.0} s)");
        o.WriteLine($"  verified:     {r.Verified switch { true => "yes, SHA-256 of every image equal on both sides", false => "NO: the images differ", null => "not requested (--verify)" }}");
        if (net.Redirector != "none") o.WriteLine($"  network:      {NetworkSummary.Describe(net)}");
    }

    private static void WriteJson(MigrationReport r, RedirectionReport net)
    {
        using var stdout = Console.OpenStandardOutput();
        // relaxed escaping: "tunnel+dns" stays readable (the output is not HTML)
        using (var w = new Utf8JsonWriter(stdout, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteNumber("total_seconds", Math.Round(r.TotalSeconds, 3));
            w.WriteNumber("downtime_ms", Math.Round(r.DowntimeMs, 1));
            w.WriteNumber("bytes_on_wire", r.BytesOnWire);
            w.WriteNumber("bytes_on_wire_after_bulk", r.BytesOnWireAfterBulk);
            w.WriteNumber("bytes_of_data", r.BytesOfData);
            w.WriteNumber("bytes_zero", r.BytesZero);
            foreach (var c in BlockCodec.All) w.WriteNumber($"bytes_{c.Name}", r.BytesWith(c));
            w.WriteNumber("bytes_to_send", r.BytesToSend);
            w.WriteNumber("rounds", r.Rounds);
            w.WriteNumber("throttled_seconds", Math.Round(r.ThrottledSeconds, 3));
            w.WriteNumber("writes_delayed_seconds", Math.Round(r.WritesDelayedSeconds, 3));
            if (r.Verified is { } v) w.WriteBoolean("verified", v);
            else w.WriteNull("verified");
            w.WriteBoolean("resumed", r.Resumed);
            w.WriteNumber("frozen_at_unix_ms", r.FrozenAtUnixMs);
            w.WriteNumber("final_blocks", r.FinalBlocks);
            w.WriteString("switchover", r.Switchover);
            if (r.CommitMs is { } commitMs) w.WriteNumber("commit_ms", Math.Round(commitMs, 1));
            else w.WriteNull("commit_ms");
            w.WriteString("hypervisor", r.Hypervisor);
            HypervisorCliOptions.WriteJson(w, r);
            w.WriteStartArray("disks");
            foreach (var d in r.Disks) w.WriteStringValue(d);
            w.WriteEndArray();
            w.WritePropertyName("network");
            JsonSerializer.Serialize(w, net, RedirectionJsonContext.Default.RedirectionReport);
            w.WriteEndObject();
        }
        stdout.WriteByte((byte)'\n');
    }
}
