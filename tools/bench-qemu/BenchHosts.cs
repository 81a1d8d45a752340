using System.Globalization;
using System.Text.RegularExpressions;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Bench.Qemu;

/// <summary>
/// The two "hosts" of one run: network namespaces joined by a shaped veth; the source image (guest area
/// plus its fill, <see cref="DiskFill"/>) and an empty destination image, each served by nbdkit on a
/// unix socket; the source guest booted and writing in the source namespace; the destination QEMU
/// waiting in the other.
/// With <c>shim</c> (BlockMigrate's runs) both disks are served by nbdkit with the BlockMigrate filter:
/// the source with its dirty map, the destination in gate mode on the image the receiver writes
/// (<see cref="ImageDir"/>/vda.img, gate map <see cref="GateDir"/>/vda.map).
/// </summary>
public sealed class BenchHosts : IDisposable
{
    private readonly TwoHostBed _bed;

    private BenchHosts(TwoHostBed bed, BenchSettings settings)
    {
        _bed = bed;
        Settings = settings;
    }

    public bool Shim => _bed.Options.Shims;
    public string SourceMap => _bed.SourceMap;
    public string ImageDir => _bed.ImageDir;
    public string GateDir => _bed.GateDir;

    public BenchSettings Settings { get; }
    public NamespacePair Net => _bed.Net!;
    /// <summary>The source's and the receiver's keys (in <see cref="Directory"/>).</summary>
    public KeyPair Keys => _bed.Keys;
    public string Directory => _bed.Dir.Path;
    public string SourceImage => _bed.SourceImage;
    public string DestinationImage => _bed.DestinationImage;
    public string SourceDiskSocket => SourceDisk.Socket;
    public string DestinationDiskSocket => DestinationDisk.Socket;
    public NbdkitServer SourceDisk => _bed.SourceDisk;
    public NbdkitServer DestinationDisk => _bed.DestinationDisk;
    public QemuGuest Source => _bed.Source;
    public QemuGuest Destination { get; private set; } = null!;

    public static async Task<BenchHosts> StartAsync(BenchSettings s, bool shim = false)
    {
        if (s.HeavyMiB > 0 && (s.HeavyAtMiB + s.HeavyMiB) << 20 > s.DiskBytes)
            throw new ArgumentException($"the heavy writer's {s.HeavyMiB} MiB from MiB {s.HeavyAtMiB} do not fit a {s.DiskBytes >> 20} MiB disk: use a larger --disk");
        var bed = await TwoHostBed.StartAsync(new TwoHostBedOptions
        {
            DirTag = "bench-qemu", NamespaceTag = "bq", Rate = s.Rate,
            // The delayed connections' first hop is loopback, to tools/wanem.py (DelayedPath). With
            // loopback's 64 KiB MTU the sender's autotuned send buffer grew to 4 MiB (1.6 s of a
            // 20 Mbit/s memory stream queued when QEMU stopped the guest); with a NIC's MTU it stays
            // near what the proxy's receive window allows, as towards the real link.
            BeforeImages = s.Delay > TimeSpan.Zero
                ? b => Tool.CheckAsync("ip", ["-n", b.Net!.Source, "link", "set", "lo", "mtu", "1500"])
                : null,
            DiskBytes = s.DiskBytes, FillOffset = (long)s.GuestBlocks * GuestDisk.BlockSize, FillBytes = s.FillBytes,
            Fill = (f, bytes) => DiskFill.WriteAsync(f, bytes, s.FillKind),
            Shims = shim, GateBlockSize = 4096, // the filter's default block size
            GuestBlocks = s.GuestBlocks, GuestMemoryMiB = s.MemoryMiB,
            KernelArgs = s.HeavyMiB > 0 ? $"heavy={s.HeavyMiB} heavyat={s.HeavyAtMiB}" : null,
            BootedPattern = @"PROGRESS seq=200\b",
        });
        var hosts = new BenchHosts(bed, s);
        try
        {
            hosts.Destination = bed.StartDestination("dst");
            return hosts;
        }
        catch
        {
            hosts.Dispose();
            throw;
        }
    }

    /// <summary>The source guest's RAM now (QMP <c>pmemsave</c> into the run's directory), for <see cref="PhysicalLimit"/>.</summary>
    public async Task<string> DumpSourceMemoryAsync(CancellationToken ct)
    {
        var path = System.IO.Path.Combine(Directory, "src-ram.dump");
        await using var qmp = await BlockMigrate.Hypervisors.Qemu.QmpClient.ConnectAsync(Source.ObserverQmpSocket, TimeSpan.FromSeconds(10), ct);
        await qmp.ExecuteAsync("pmemsave", new System.Text.Json.Nodes.JsonObject
        {
            ["val"] = 0, ["size"] = (long)Settings.MemoryMiB << 20, ["filename"] = path,
        }, ct);
        return path;
    }

    /// <summary>
    /// The heavy writer's progress at the source so far, from its "HEAVY n=COUNT up=SECONDS" console
    /// lines (writes of 1 MiB, guest uptime); empty without it.
    /// </summary>
    public List<(double Writes, double Up)> HeavyProgress() =>
        Regex.Matches(Source.Serial.Text(), @"HEAVY n=(\d+) up=([\d.]+)")
            .Select(m => (double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture)))
            .ToList();

    /// <summary>MiB/s between two points of <see cref="HeavyProgress"/>; null if there is no time between them.</summary>
    public static double? HeavyRate((double Writes, double Up) from, (double Writes, double Up) to) =>
        to.Up > from.Up ? (to.Writes - from.Writes) / (to.Up - from.Up) : null;

    /// <summary>What went wrong on the side: an NBD server that died (with its stderr), guest I/O errors.</summary>
    public string Diagnose()
    {
        var notes = new List<string>();
        foreach (var (name, server) in new[] { ("source nbdkit", SourceDisk), ("destination nbdkit", DestinationDisk) })
            if (server is { HasExited: true })
                notes.Add($"{name} exited ({server.ExitCode}): {server.Stderr.Trim()}");
        if (Source != null && Source.Serial.Text().Contains("WRITE-ERR"))
            notes.Add("source guest saw write errors");
        return string.Join("; ", notes);
    }

    /// <summary>The source QEMU's memory migration, from its observer monitor: status, time, bytes, dirty-sync passes; and its block jobs.</summary>
    public async Task<string> MigrationStateAsync()
    {
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await using var qmp = await BlockMigrate.Hypervisors.Qemu.QmpClient.ConnectAsync(Source.ObserverQmpSocket, TimeSpan.FromSeconds(5), cts.Token);
            var m = await qmp.ExecuteObjectAsync("query-migrate", null, cts.Token);
            var ram = m["ram"] as System.Text.Json.Nodes.JsonObject;
            var jobs = (await qmp.ExecuteAsync("query-block-jobs", null, cts.Token))?.AsArray() ?? [];
            var mirror = jobs.Select(j => string.Create(CultureInfo.InvariantCulture,
                $", block job {(string?)j?["device"]} {((bool?)j?["ready"] == true ? "ready" : "not ready")} at {((long?)j?["offset"] ?? 0) / 1e6:0} of {((long?)j?["len"] ?? 0) / 1e6:0} MB"));
            return string.Create(CultureInfo.InvariantCulture,
                $"memory migration {(string?)m["status"] ?? "none"} for {((long?)m["total-time"] ?? 0) / 1000.0:0} s, {((long?)ram?["transferred"] ?? 0) / 1e6:0} MB sent, {(long?)ram?["dirty-sync-count"] ?? 0} passes{string.Concat(mirror)}");
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return "memory migration state unknown: " + e.Message;
        }
    }

    /// <summary>
    /// How often the source guest booted ("GUEST-INIT" on its console), and the highest progress it
    /// printed in its last boot: a guest that reset during the migration starts its sequence again,
    /// so the highest number on the whole console is not where the destination goes on from.
    /// </summary>
    public (int Boots, long LastProgress) SourceConsole()
    {
        var text = Source.Serial.Text();
        var boots = Regex.Matches(text, "GUEST-INIT").Count;
        var lastBoot = text[Math.Max(0, text.LastIndexOf("GUEST-INIT", StringComparison.Ordinal))..];
        var progress = Regex.Matches(lastBoot, @"PROGRESS seq=(\d+)").Select(m => long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture));
        return (boots, progress.DefaultIfEmpty(-1).Max());
    }

    /// <summary>Copies both guests' consoles out of the run's directory (deleted on Dispose) for a failed run; returns where.</summary>
    public string KeepConsoles(string method, int run)
    {
        var keep = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"bench-qemu-failed-{Environment.ProcessId}-{method}-{run}");
        System.IO.Directory.CreateDirectory(keep);
        foreach (var f in System.IO.Directory.GetFiles(Directory, "*.serial"))
            File.Copy(f, System.IO.Path.Combine(keep, System.IO.Path.GetFileName(f)), overwrite: true);
        return keep;
    }

    /// <summary>
    /// Why a destination guest may not go on after a migration: its run state, its incoming
    /// migration's status, the writes its disk completed, where its vCPU is (from its observer
    /// monitor), and the end of its serial console.
    /// </summary>
    public async Task<string> DestinationStateAsync()
    {
        string state;
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await using var qmp = await BlockMigrate.Hypervisors.Qemu.QmpClient.ConnectAsync(Destination.ObserverQmpSocket, TimeSpan.FromSeconds(5), cts.Token);
            var status = await qmp.ExecuteObjectAsync("query-status", null, cts.Token);
            var migrate = await qmp.ExecuteObjectAsync("query-migrate", null, cts.Token);
            // did the guest's disk writes complete there, and is its vCPU running or halted (waiting for an interrupt)?
            var disk = (await qmp.ExecuteAsync("query-blockstats", null, cts.Token))?.AsArray()
                .FirstOrDefault(b => (string?)b?["node-name"] == "d0" || (string?)b?["qdev"] is { } q && q.Contains("vblk0"))?["stats"];
            var registers = (string?)await qmp.ExecuteAsync("human-monitor-command",
                new System.Text.Json.Nodes.JsonObject { ["command-line"] = "info registers" }, cts.Token) ?? "";
            var cpu = string.Join(" ", Regex.Matches(registers, @"\b(RIP=\w+|HLT=\d)").Select(m => m.Value));
            state = $"destination {(string?)status["status"]}, incoming migration {(string?)migrate["status"] ?? "none"}, "
                + $"disk writes done there {(long?)disk?["wr_operations"]} (failed {(long?)disk?["failed_wr_operations"]}), vCPU {cpu}";
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            state = "destination state unknown: " + e.Message;
        }
        return $"{state}; {GateState()}; destination console ends: {Destination.Serial.Tail(160).ReplaceLineEndings(" / ")}";
    }

    /// <summary>
    /// The destination shim's map (BlockMigrate's runs only): a request the gate still held would keep a
    /// guest from going on, so a failed run says whether any block or the whole disk was still gated, how
    /// long requests waited at the gate in all, and how many writes the shim saw and still had in flight.
    /// </summary>
    private string GateState()
    {
        var map = System.IO.Path.Combine(GateDir, "vda.map");
        if (!File.Exists(map)) return "no destination gate map";
        try
        {
            using var m = BlockMigrate.Maps.DirtyMap.Open(map);
            var i = m.Info();
            return string.Create(CultureInfo.InvariantCulture,
                $"destination map: state {i.State}, {i.GatedBlocks} blocks gated, requests held at the gate {i.Gated.TotalMilliseconds:0} ms in all, {i.Writes} writes seen, {i.WritesInFlight} in flight");
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return "destination map unreadable: " + e.Message;
        }
    }

    public void Dispose() => _bed.Dispose();
}
