using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Bench.Qemu;

/// <summary>
/// BlockMigrate's side of the comparison, as an admin runs it: <c>blockmigrate receive --once</c> in
/// the destination namespace (writing the image the destination shim serves in gate mode), then
/// <c>blockmigrate migrate --hypervisor qemu</c> in the source namespace. Same hosts, guest and link as
/// <see cref="QemuCopyStorageMigration"/>. Total is the wall time of the migrate command (process start
/// to exit, dotnet start-up included); downtimes and memory bytes come from its JSON report.
/// <paramref name="memory"/> sets the memory stream as the baseline of the same row sets its own
/// (<see cref="MemoryMode"/>): QEMU's defaults (no multifd option passed), or
/// <c>--multifd --multifd-channels 1 --memory-compression zstd</c>. One channel: here multifd is for
/// the compression; a second channel only keeps more bytes in flight when QEMU reports completion,
/// which the guest waits for (measured at 20 Mbit/s: 697 ms guest downtime with one, 1140 with two).
/// Memory mode postcopy passes <c>--postcopy</c> (post-copy after the first pass over memory), and only
/// when this build's <c>migrate --help</c> lists that option: without it the run fails with one line
/// saying so (the BlockMigrate side of <c>@postcopy</c> is not guessed at).
/// Both of the source's connections, the engine's to the receiver and QEMU's memory stream (one or more
/// multifd channels), take the delayed path (<see cref="DelayedPath"/>), as the baseline's do.
/// <paramref name="switchover"/> is migrate's <c>--switchover</c>: null passes nothing (the default, gate:
/// the destination resumes once the final dirty set is gated there), "commit" makes the destination wait
/// until every final block is written and fsynced. The memory stream is migrate's default, TLS under a
/// key made for the migration (docs/hypervisors.md); <paramref name="memoryPlaintext"/> passes
/// <c>--memory-plaintext</c> (method <c>blockmigrate-memplain</c>), to measure what the encryption costs.
/// </summary>
public sealed class BlockMigrateMigration(MemoryMode memory = MemoryMode.Defaults, string? switchover = null, bool memoryPlaintext = false) : IMigrationUnderTest
{
    private const int MemoryPort = 4444;
    private int _runs; // this method's runs so far: names its timelines

    public string Name => (memoryPlaintext ? "blockmigrate-memplain" : switchover == null ? "blockmigrate" : "blockmigrate-" + switchover) + "@" + memory.Label();
    public MemoryMode Memory => memory;

    public async Task<MethodOutcome> RunAsync(
        BenchHosts hosts, CancellationToken ct)
    {
        if (memory == MemoryMode.Postcopy)
            await RequireOptionAsync("--postcopy");
        var keys = hosts.Keys;
        var dstIp = hosts.Net.DestinationAddress;
        using var receiver = BackgroundProcess.CliIn(hosts.Net.Destination, "receive", "--listen", $"{dstIp}:0",
            "--image-dir", hosts.ImageDir, "--once", "--gate-map-dir", hosts.GateDir, "--key", keys.ReceiverKey, "--trusted", keys.Trusted);
        var port = (await receiver.WaitForLineAsync(@"^listening on [^\s]+:(\d+)$", TimeSpan.FromSeconds(30))).Groups[1].Value;
        using var enginePath = await DelayedPath.StartAsync(hosts, int.Parse(port, CultureInfo.InvariantCulture));
        using var memoryPath = await DelayedPath.StartAsync(hosts, MemoryPort);
        var args = new List<string>
        {
            "migrate", "--disk", $"vda={hosts.SourceImage}:{hosts.SourceMap}", "--to", enginePath.HostPort,
            "--key", keys.SourceKey, "--peer-fingerprint", keys.ReceiverFingerprint, "--json", "--timeout", "800",
            "--hypervisor", "qemu", "--qmp-source", hosts.Source.QmpSocket, "--qmp-destination", hosts.Destination.QmpSocket,
            "--migration-uri", $"tcp:{memoryPath.HostPort}", "--incoming-uri", $"tcp:0.0.0.0:{MemoryPort}",
        };
        if (switchover != null)
            args.AddRange(["--switchover", switchover]);
        if (memoryPlaintext)
            args.Add("--memory-plaintext");
        if (memory == MemoryMode.MultifdZstd)
            args.AddRange(["--multifd", "--multifd-channels", "1", "--memory-compression", "zstd"]);
        if (memory == MemoryMode.Postcopy)
            args.Add("--postcopy");
        if (hosts.Settings.AutoConverge) args.Add("--auto-converge"); // as the baseline, when the link needs it
        if (hosts.Settings.TimelineDir is { } timelines)
            args.AddRange(["--timeline", Path.Combine(timelines, $"{Name}-{Interlocked.Increment(ref _runs)}.svg")]);
        var started = Stopwatch.GetTimestamp();
        using var migrate = BackgroundProcess.CliIn(hosts.Net.Source, args.ToArray());
        int exit;
        try
        {
            exit = await migrate.WaitForExitAsync(TimeSpan.FromMinutes(14));
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException("blockmigrate migrate did not finish: " + Last(migrate.Stderr));
        }
        var total = Stopwatch.GetElapsedTime(started);
        if (Environment.GetEnvironmentVariable("BENCH_VM_LOG_DIR") is { Length: > 0 } logDir)
            File.WriteAllText(Path.Combine(logDir, $"{Name}-{DateTime.UtcNow:HHmmss}.log"), migrate.Stderr);
        if (exit != 0)
            throw new InvalidOperationException($"blockmigrate migrate exited {exit}: {(exit == 2 ? Usage(migrate.Stderr) : Last(migrate.Stderr))} {enginePath.Errors} {memoryPath.Errors}".TrimEnd());
        await receiver.WaitForExitAsync(TimeSpan.FromSeconds(30));
        var r = JsonDocument.Parse(migrate.Stdout).RootElement;
        TimeSpan? Ms(string name) => r.GetProperty(name).ValueKind == JsonValueKind.Number ? TimeSpan.FromMilliseconds(r.GetProperty(name).GetDouble()) : null;
        // where the guest's pause went, from the QEMU steps migrate logs (ms after the source's STOP)
        string After(string step) => System.Text.RegularExpressions.Regex.Match(migrate.Stderr, $@"qemu: {step} (\d+) ms after STOP") is { Success: true } m ? m.Groups[1].Value : "?";
        var detail = string.Format(CultureInfo.InvariantCulture,
            "disk {0:0.0} MB on the wire for {1:0.0} MB of data, disk downtime {2:0} ms, {3} final blocks committed {4:0} ms after the freeze, {5} rounds, engine {6:0.00} s{7}; after STOP: handed over {8}, source completed {9}, destination loaded {10} ms",
            r.GetProperty("bytes_on_wire").GetInt64() / 1e6, r.GetProperty("bytes_of_data").GetInt64() / 1e6,
            r.GetProperty("downtime_ms").GetDouble(), r.GetProperty("final_blocks").GetInt64(), r.GetProperty("commit_ms").GetDouble(),
            r.GetProperty("rounds").GetInt32(), r.GetProperty("total_seconds").GetDouble(),
            ", memory " + memory.Label() + (memoryPlaintext ? " plaintext" : " TLS-PSK"),
            After("disks handed over"), After("source completed"), After("destination loaded"));
        // how hard the disk throttle held the guest: the report's seconds, the log's lowest cap
        var caps = System.Text.RegularExpressions.Regex.Matches(migrate.Stderr, @"throttle: guest writes capped at ([\d.]+) MiB/s")
            .Select(m => double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)).ToList();
        return new MethodOutcome(total, Ms("guest_downtime_ms") ?? TimeSpan.Zero, Ms("hypervisor_downtime_ms"), r.GetProperty("memory_bytes").GetInt64(), detail)
        {
            ThrottledSeconds = r.GetProperty("throttled_seconds").GetDouble(),
            WritesDelayedSeconds = r.GetProperty("writes_delayed_seconds").GetDouble(),
            ThrottleFloorMiBps = caps.Count > 0 ? caps.Min() : null,
        };
    }

    /// <summary>Fails with one clear line unless <c>blockmigrate migrate --help</c> lists <paramref name="option"/>.</summary>
    private static async Task RequireOptionAsync(string option)
    {
        using var help = BackgroundProcess.Cli("migrate", "--help");
        var exit = await help.WaitForExitAsync(TimeSpan.FromSeconds(60));
        if (exit != 0 || !System.Text.RegularExpressions.Regex.IsMatch(help.Stdout, $@"(^|\s){System.Text.RegularExpressions.Regex.Escape(option)}(?![\w-])", System.Text.RegularExpressions.RegexOptions.Multiline))
            throw new NotSupportedException(
                $"memory mode postcopy: this blockmigrate has no `migrate {option}` (migrate --help exited {exit} without listing it); the BlockMigrate side of @postcopy needs that option");
    }

    /// <summary>A usage error (exit status 2) is one line per problem, then a pointer to --help: all of them.</summary>
    private static string Usage(string stderr) => string.Join(" / ", stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));

    private static string Last(string stderr) =>
        stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault() ?? "(no output)";
}
