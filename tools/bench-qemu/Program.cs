using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using BlockMigrate.Bench.Qemu;
using BlockMigrate.TestSupport;

// bench-qemu METHOD[@MEMORY][,METHOD[@MEMORY]...] [--rate 100mbit|none] [--delay MS] [--runs N] [--memory MiB] [--disk 256M]
//            [--fill 128M] [--fill-kind random|os] [--heavy MiB] [--auto-converge] [--json FILE] [--timeout MINUTES]
//            [--timeline-dir DIR]
// METHOD: baseline (QEMU copy-storage), blockmigrate (migrate's default switchover, gate) or
// blockmigrate-commit (--switchover commit) or blockmigrate-memplain (the default with --memory-plaintext:
// what the memory stream's TLS costs). MEMORY: defaults (QEMU's, the default), zstd (multifd, one
// channel, zstd) or postcopy (post-copy after the first pass; BlockMigrate: migrate --postcopy), set
// alike for every method (MemoryMode). Runs are interleaved: a1 b1 c1 a2 b2 c2 ...
// --delay: one-way delay in ms on every migration connection of every method (default 25; 0 = none).
// --heavy: a second writer in the guest, random 1 MiB writes back to back into that many MiB after the fill.
// --timeline-dir: every BlockMigrate run also draws itself (migrate --timeline DIR/METHOD-RUN.svg).
// Every row also gets its physical limit (PhysicalLimit): compressed disk + compressed RAM over the link rate.
// Prints one markdown row per run. Needs root (network namespaces) and the guest (tools/guest/build-guest.sh).
var methods = new List<IMigrationUnderTest>();
var settings = new BenchSettings();
for (var i = 0; i < args.Length; i++)
{
    string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
    switch (args[i])
    {
        case "--rate": var r = Next(); settings = settings with { Rate = r == "none" ? null : r }; break;
        case "--delay": settings = settings with { Delay = TimeSpan.FromMilliseconds(double.Parse(Next(), CultureInfo.InvariantCulture)) }; break;
        case "--fill-kind": settings = settings with { FillKind = Enum.Parse<FillKind>(Next(), ignoreCase: true) }; break;
        case "--runs": settings = settings with { Runs = int.Parse(Next(), CultureInfo.InvariantCulture) }; break;
        case "--memory": settings = settings with { MemoryMiB = int.Parse(Next(), CultureInfo.InvariantCulture) }; break;
        case "--disk": settings = settings with { DiskBytes = Size(Next()) }; break;
        case "--fill": settings = settings with { FillBytes = Size(Next()) }; break;
        case "--json": settings = settings with { JsonOut = Next() }; break;
        case "--timeline-dir": settings = settings with { TimelineDir = Path.GetFullPath(Next()) }; break;
        case "--timeout": settings = settings with { RunTimeout = TimeSpan.FromMinutes(double.Parse(Next(), CultureInfo.InvariantCulture)) }; break;
        case "--auto-converge": settings = settings with { AutoConverge = true }; break;
        case "--heavy": settings = settings with { HeavyMiB = int.Parse(Next(), CultureInfo.InvariantCulture) }; break;
        default:
            foreach (var spec in args[i].Split(','))
            {
                var at = spec.IndexOf('@');
                var (m, memory) = at < 0 ? (spec, MemoryMode.Defaults) : (spec[..at], MemoryModes.Parse(spec[(at + 1)..]));
                methods.Add(m switch
                {
                    "baseline" or "qemu-copy-storage" => new QemuCopyStorageMigration(memory),
                    "blockmigrate" => new BlockMigrateMigration(memory),
                    "blockmigrate-commit" => new BlockMigrateMigration(memory, switchover: "commit"),
                    "blockmigrate-memplain" => new BlockMigrateMigration(memory, memoryPlaintext: true),
                    _ => throw new ArgumentException($"unknown method '{m}' (baseline, blockmigrate, blockmigrate-commit, blockmigrate-memplain)"),
                });
            }
            break;
    }
}
if (methods.Count == 0)
    methods.Add(new QemuCopyStorageMigration());

await GuestImage.EnsureBuiltAsync();
var results = new List<BenchResult>();
Console.WriteLine($"link {settings.Rate ?? "unshaped"}, {settings.Delay.TotalMilliseconds:0} ms one-way delay{(settings.AutoConverge ? ", auto-converge" : "")}, guest {settings.MemoryMiB} MiB RAM, disk {settings.DiskBytes >> 20} MiB ({settings.FillBytes >> 20} MiB {settings.FillKind.ToString().ToLowerInvariant()} data + {settings.GuestBlocks * 4 / 1024} MiB rewritten by the guest{(settings.HeavyMiB > 0 ? $", heavy writer over {settings.HeavyMiB} MiB" : "")})");
Console.WriteLine("| method | run | total s | guest downtime ms | QEMU downtime ms | wire MB | memory MB (QEMU) | limit s | total/limit | disk | detail |");
Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|");
for (var run = 1; run <= settings.Runs; run++)
    foreach (var method in methods)
    {
        using var timeout = new CancellationTokenSource(settings.RunTimeout);
        using var hosts = await BenchHosts.StartAsync(settings, shim: method is BlockMigrateMigration);
        // one copy of the guest's RAM before the migration, for the physical limit
        var memoryCompressed = PhysicalLimit.CompressedBytes(await hosts.DumpSourceMemoryAsync(timeout.Token));
        File.Delete(Path.Combine(hosts.Directory, "src-ram.dump"));
        var heavyAtStart = hosts.HeavyProgress(); // the heavy writer unthrottled: boot to the migration's start
        var wireBefore = await WireCounter.BytesAsync(hosts.Net.Source);
        MethodOutcome measured;
        (double? Before, double? During) HeavyRates()
        {
            var end = hosts.HeavyProgress();
            return (heavyAtStart.Count > 1 ? BenchHosts.HeavyRate(heavyAtStart[0], heavyAtStart[^1]) : null,
                heavyAtStart.Count > 0 && end.Count > heavyAtStart.Count ? BenchHosts.HeavyRate(heavyAtStart[^1], end[^1]) : null);
        }
        try
        {
            measured = await method.RunAsync(hosts, timeout.Token);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            var what = e is OperationCanceledException && timeout.IsCancellationRequested
                ? $"did not finish within {settings.RunTimeout.TotalMinutes:0.#} min ({await hosts.MigrationStateAsync()})"
                : e.Message;
            var why = $"FAILED: {what} {hosts.Diagnose()}; consoles kept in {hosts.KeepConsoles(method.Name, run)}".Replace('|', '/').Replace('\n', ' ');
            results.Add(new BenchResult(method.Name, run, TimeSpan.Zero, TimeSpan.Zero, null, 0, 0, false, why) { Memory = method.Memory, HeavyMiBps = HeavyRates() });
            Console.WriteLine($"| {method.Name} | {run} | | | | | | | | BAD | {why} |");
            continue;
        }
        var (total, downtime, qemuDowntime, memory, detail) = (measured.Total, measured.GuestDowntime, measured.HypervisorDowntime, measured.MemoryBytes, measured.Detail);
        var wire = await WireCounter.BytesAsync(hosts.Net.Source) - wireBefore;
        // the guest must go on at the destination, and the destination disk must hold every write
        var (boots, last) = hosts.SourceConsole();
        string? stuck = null;
        try
        {
            await hosts.Destination.Serial.WaitForProgressBeyondAsync(last + 100, TimeSpan.FromSeconds(60));
        }
        catch (TimeoutException e)
        {
            // a row saying so, not a crash that loses the other runs
            stuck = $"the guest did not go on at the destination ({e.Message.Split(';')[0]}; {await hosts.DestinationStateAsync()}) {hosts.Diagnose()}";
        }
        hosts.Destination.Kill();
        var verdict = GuestDisk.Verify(hosts.DestinationImage, settings.GuestBlocks);
        // a guest that reset at the source is a failed run too, even if the destination went on
        var rebooted = boots > 1 ? $"the source guest booted {boots} times" : null;
        var ok = verdict.Ok && stuck == null && rebooted == null;
        var failure = string.Join("; ", new[] { rebooted, stuck }.Where(x => x != null));
        // the physical limit: the source disk as it was handed over, compressed, plus the RAM's copy
        var diskCompressed = PhysicalLimit.CompressedBytes(hosts.SourceImage);
        var limit = settings.RateBitsPerSecond is { } bps ? PhysicalLimit.Seconds(diskCompressed + memoryCompressed, bps) : (double?)null;
        var res = new BenchResult(method.Name, run, total, downtime, qemuDowntime, wire, memory, ok,
            (failure != "" ? $"{detail}; FAILED: {failure}; {verdict}" : verdict.Ok ? detail : detail + "; " + verdict).Replace('|', '/').ReplaceLineEndings(" "))
        {
            Memory = method.Memory, DiskCompressedBytes = diskCompressed, MemoryCompressedBytes = memoryCompressed, LimitSeconds = limit,
            HeavyMiBps = HeavyRates(), ThrottledSeconds = measured.ThrottledSeconds,
            WritesDelayedSeconds = measured.WritesDelayedSeconds, ThrottleFloorMiBps = measured.ThrottleFloorMiBps,
        };
        if (!ok)
            res = res with { Detail = $"{res.Detail}; consoles kept in {hosts.KeepConsoles(method.Name, run)}" };
        results.Add(res);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"| {res.Method} | {run} | {total.TotalSeconds:0.00} | {downtime.TotalMilliseconds:0} | {qemuDowntime?.TotalMilliseconds:0} | {wire / 1e6:0.0} | {memory / 1e6:0.0} | {limit:0.0} | {total.TotalSeconds / limit:0.00} | {(ok ? "OK" : "BAD")} | {res.Detail} |"));
    }

if (settings.JsonOut != null)
{
    var arr = new JsonArray();
    foreach (var r in results)
        arr.Add((JsonNode)new JsonObject
        {
            ["method"] = r.Method, ["run"] = r.Run, ["rate"] = settings.Rate, ["delay_ms"] = settings.Delay.TotalMilliseconds,
            ["fill_kind"] = settings.FillKind.ToString().ToLowerInvariant(), ["total_s"] = r.Total.TotalSeconds,
            ["guest_downtime_ms"] = r.GuestDowntime.TotalMilliseconds, ["qemu_downtime_ms"] = r.HypervisorDowntime?.TotalMilliseconds,
            ["wire_bytes"] = r.WireBytes, ["memory_bytes"] = r.MemoryBytes, ["disk_ok"] = r.DiskVerified, ["detail"] = r.Detail,
            ["memory_mode"] = r.Memory.Label(), ["heavy_mib"] = settings.HeavyMiB, ["heavy_mib_per_s_before"] = r.HeavyMiBps.Before, ["heavy_mib_per_s_during"] = r.HeavyMiBps.During,
            ["disk_compressed_bytes"] = r.DiskCompressedBytes, ["memory_compressed_bytes"] = r.MemoryCompressedBytes,
            ["limit_s"] = r.LimitSeconds, ["throttled_seconds"] = r.ThrottledSeconds,
            ["writes_delayed_seconds"] = r.WritesDelayedSeconds, ["throttle_floor_mib_per_s"] = r.ThrottleFloorMiBps,
        });
    await File.WriteAllTextAsync(settings.JsonOut, arr.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
}
return results.All(r => r.DiskVerified) ? 0 : 1;

static long Size(string s)
{
    var unit = char.ToUpperInvariant(s[^1]) switch { 'K' => 1L << 10, 'M' => 1L << 20, 'G' => 1L << 30, _ => 1L };
    return long.Parse(unit == 1 ? s : s[..^1], CultureInfo.InvariantCulture) * unit;
}
