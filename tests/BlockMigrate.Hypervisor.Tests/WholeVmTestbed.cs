using System.Security.Cryptography;
using System.Text.Json;
using BlockMigrate.Hypervisors.Qemu;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// Two hosts for a whole-VM migration with local disks, set up as an admin would:
/// <list type="bullet">
/// <item>source: the guest's image (first <see cref="GuestBlocks"/> blocks written by the guest, then
/// <see cref="FillBytes"/> of random data standing for the rest of the VM's disk), served by the
/// source shim; the source QEMU on it.</item>
/// <item>destination: <c>blockmigrate receive --once</c> writing <c>IMAGEDIR/vda.img</c> directly and
/// gating through <c>GATEDIR/vda.map</c>; the destination shim in gate mode on that image and map;
/// a destination QEMU with <c>-incoming defer -S</c> on that shim.</item>
/// </list>
/// Optionally each side lives in its own network namespace, joined by a tbf-shaped veth (the receiver
/// and the destination QEMU listen in the destination namespace; <c>blockmigrate migrate</c> and the
/// source QEMU run in the source one). Every process is stopped by PID on Dispose, the namespaces removed.
/// </summary>
public sealed class WholeVmTestbed : ShimBed
{
    public const int GuestBlocks = 4096;                      // 16 MiB written round-robin by the guest
    public const long FillBytes = 16L << 20;                  // the rest of the disk: random data
    public const long DiskBytes = GuestBlocks * (long)GuestDisk.BlockSize + FillBytes;
    public const int GuestMemoryMiB = 96;

    private int _destinations;

    private WholeVmTestbed(TwoHostBed bed) : base(bed) { }

    /// <summary>Added to both guests' kernel command line.</summary>
    public string? KernelArgs => Bed.Options.KernelArgs;
    public NamespacePair? Net => Bed.Net;
    public string ListenAddress => Bed.ListenAddress;

    /// <summary>Images, shims and the source guest (booted and writing).</summary>
    public static async Task<WholeVmTestbed> StartAsync(string tag, string? rate = null, string? kernelArgs = null) =>
        new(await TwoHostBed.StartAsync(new TwoHostBedOptions
        {
            DirTag = "vm-" + tag, NamespaceTag = rate != null ? tag : null, Rate = rate,
            DiskBytes = DiskBytes, FillOffset = DiskBytes - FillBytes, FillBytes = FillBytes,
            GuestBlocks = GuestBlocks, GuestMemoryMiB = GuestMemoryMiB, KernelArgs = kernelArgs,
            TeardownLog = line => TestContext.Out.WriteLine(line),
        }));

    /// <summary>A fresh destination QEMU (<c>-incoming defer -S</c>) on the destination shim.</summary>
    public QemuGuest StartDestination() => Bed.StartDestination($"dst{++_destinations}");

    /// <summary><c>blockmigrate receive --once</c> in the destination namespace; returns it and its HOST:PORT.</summary>
    public async Task<(BackgroundProcess Receiver, string Address)> StartReceiverAsync()
    {
        var (p, port) = await Bed.StartReceiverAsync();
        return (p, $"{ListenAddress}:{port}");
    }

    /// <summary>Where QEMU sends memory: a unix socket on loopback, TCP across the namespaces.</summary>
    public (string Uri, string Incoming) MigrationUris(int n) => Net == null
        ? ($"unix:{Dir[$"mig{n}.sock"]}", $"unix:{Dir[$"mig{n}.sock"]}")
        : ($"tcp:{Net.DestinationAddress}:{4440 + n}", $"tcp:0.0.0.0:{4440 + n}");

    /// <summary><c>blockmigrate migrate --hypervisor qemu</c> from the source namespace, as an admin types it.</summary>
    public BackgroundProcess StartMigrate(string to, QemuGuest destination, int n, params string[] extra)
    {
        var (uri, incoming) = MigrationUris(n);
        return StartMigrate(to, destination, uri, incoming, extra);
    }

    /// <summary>The same, with the memory stream's URIs given (e.g. through a recording proxy).</summary>
    public BackgroundProcess StartMigrate(string to, QemuGuest destination, string uri, string incoming, params string[] extra)
    {
        var args = new List<string>
        {
            "migrate", "--disk", $"vda={SourceImage}:{SourceMap}", "--to", to, "--key", Keys.SourceKey,
            "--peer-fingerprint", Keys.ReceiverFingerprint, "--json", "--timeout", "200",
            "--hypervisor", "qemu", "--qmp-source", Source.QmpSocket, "--qmp-destination", destination.QmpSocket,
            "--migration-uri", uri, "--incoming-uri", incoming,
        };
        args.AddRange(extra);
        return Own(BackgroundProcess.CliIn(Net?.Source, args.ToArray()));
    }

    /// <summary>Waits for a CLI process to exit; on timeout fails the test with what it logged.</summary>
    public static async Task<int> ExitOfAsync(BackgroundProcess p, TimeSpan timeout)
    {
        try
        {
            return await p.WaitForExitAsync(timeout);
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"still running after {timeout.TotalSeconds:0} s; stderr:\n{p.Stderr}");
            throw;
        }
    }

    public static JsonElement Report(BackgroundProcess migrate) => JsonDocument.Parse(migrate.Stdout).RootElement;

    public static async Task<string> StatusAsync(QemuGuest guest, CancellationToken ct)
    {
        await using var qmp = await QmpClient.ConnectAsync(guest.ObserverQmpSocket, TimeSpan.FromSeconds(10), ct);
        return (string?)(await qmp.ExecuteObjectAsync("query-status", null, ct))["status"] ?? "?";
    }

    public static async Task<string> MigrationStatusAsync(QemuGuest guest, CancellationToken ct)
    {
        await using var qmp = await QmpClient.ConnectAsync(guest.ObserverQmpSocket, TimeSpan.FromSeconds(10), ct);
        return (string?)(await qmp.ExecuteObjectAsync("query-migrate", null, ct))["status"] ?? "none";
    }

    /// <summary>Stops the guest's CPUs (QMP <c>stop</c>) so its disk can be checked.</summary>
    public static async Task StopAsync(QemuGuest guest, CancellationToken ct)
    {
        await using var qmp = await QmpClient.ConnectAsync(guest.ObserverQmpSocket, TimeSpan.FromSeconds(10), ct);
        await qmp.ExecuteAsync("stop", null, ct);
    }
}
