using System.Globalization;
using System.Text.Json;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// Not a test: the measuring part of tools/bench-libvirt.sh (Explicit, so the suite never runs it; it asserts
/// only that each migration succeeded and lost nothing, never a time). <c>--hypervisor libvirt</c> next to
/// <c>--hypervisor qemu</c> on the same TCG guest (96 MiB, the sequence-numbered writer every 50 ms, a 32 MiB
/// disk: 16 MiB rewritten by the guest + 16 MiB random), the same receiver and destination shim in gate mode,
/// between two network namespaces over the same veth shaped with tbf at BENCH_LIBVIRT_RATE (default 100mbit;
/// "none": unshaped), both memory streams in plaintext over TCP with QEMU's defaults otherwise, runs
/// interleaved (libvirt, qemu, libvirt, qemu, ...; BENCH_LIBVIRT_RUNS, default 3). One JSON object a line
/// per run into BENCH_LIBVIRT_OUT: the migration's report plus method, run and the libvirt pause's timeline.
/// </summary>
[TestFixture, Explicit("a benchmark: run by tools/bench-libvirt.sh"), Category("Bench"), NonParallelizable]
public sealed class LibvirtBench
{
    private static string? Rate => Environment.GetEnvironmentVariable("BENCH_LIBVIRT_RATE") is { Length: > 0 } r ? (r == "none" ? null : r) : "100mbit";

    [Test, CancelAfter(3_600_000)]
    public async Task Libvirt_and_qemu_adapters_side_by_side(CancellationToken ct)
    {
        var runs = int.Parse(Environment.GetEnvironmentVariable("BENCH_LIBVIRT_RUNS") ?? "3", CultureInfo.InvariantCulture);
        var output = Environment.GetEnvironmentVariable("BENCH_LIBVIRT_OUT") ?? Path.Combine(Path.GetTempPath(), "bench-libvirt.jsonl");
        var methods = (Environment.GetEnvironmentVariable("BENCH_LIBVIRT_METHODS") ?? "libvirt,qemu").Split(',');
        for (var run = 1; run <= runs; run++)
            foreach (var method in methods)
            {
                var (report, log) = method == "libvirt" ? await LibvirtAsync() : await QemuAsync(ct);
                var line = new Dictionary<string, object?>
                {
                    ["method"] = method, ["run"] = run, ["rate"] = Rate ?? "none",
                    ["report"] = report,
                    ["pause_timeline"] = log.Split('\n').FirstOrDefault(l => l.Contains("where the pause went", StringComparison.Ordinal))?.Trim(),
                };
                await File.AppendAllTextAsync(output, JsonSerializer.Serialize(line) + "\n", ct);
                TestContext.Out.WriteLine($"{method} run {run}: guest paused {report.GetProperty("guest_downtime_ms")} ms, total {report.GetProperty("total_seconds")} s");
            }
    }

    private static async Task<(JsonElement Report, string Log)> LibvirtAsync()
    {
        using var bed = await LibvirtTestbed.StartAsync("b", rate: Rate);
        await bed.StartGuestAsync();
        var (receiver, address) = await bed.StartReceiverAsync();
        var migrate = bed.StartMigrate(address, "--migration-uri", $"tcp://{bed.Net.DestinationAddress}", "--memory-plaintext");
        await LibvirtMigrationTests.MigratedAsync(bed, migrate, receiver);
        return (LibvirtTestbed.Report(migrate), migrate.Stderr);
    }

    private static async Task<(JsonElement Report, string Log)> QemuAsync(CancellationToken ct)
    {
        using var bed = await WholeVmTestbed.StartAsync("b", rate: Rate);
        var destination = bed.StartDestination();
        var (receiver, address) = await bed.StartReceiverAsync();
        var migrate = bed.StartMigrate(address, destination, 1, "--memory-plaintext");
        Assert.That(await WholeVmTestbed.ExitOfAsync(migrate, TimeSpan.FromSeconds(220)), Is.Zero, migrate.Stderr);
        Assert.That(await WholeVmTestbed.ExitOfAsync(receiver, TimeSpan.FromSeconds(30)), Is.Zero, receiver.Stderr);
        var stoppedAt = bed.Source.Serial.LastProgress();
        var first = await destination.Serial.WaitForProgressBeyondAsync(stoppedAt, TimeSpan.FromSeconds(60));
        await destination.Serial.WaitForProgressBeyondAsync(first + 50, TimeSpan.FromSeconds(60));
        await WholeVmTestbed.StopAsync(destination, ct);
        var verdict = GuestDisk.Verify(bed.DestinationImage, WholeVmTestbed.GuestBlocks);
        Assert.That(verdict.Ok, verdict.ToString());
        return (WholeVmTestbed.Report(migrate), migrate.Stderr);
    }
}
