using System.Security.Cryptography;
using System.Text.Json;
using BlockMigrate.Hypervisors.Qemu;
using BlockMigrate.Maps;
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
public sealed class WholeVmTestbed : IDisposable
{
    public const int GuestBlocks = 4096;                      // 16 MiB written round-robin by the guest
    public const long FillBytes = 16L << 20;                  // the rest of the disk: random data
    public const long DiskBytes = GuestBlocks * (long)GuestDisk.BlockSize + FillBytes;
    public const int GuestMemoryMiB = 96;

    private readonly List<IDisposable> _owned = [];
    private int _destinations;

    private WholeVmTestbed(TempDir dir, NamespacePair? net, string? kernelArgs)
    {
        Dir = dir;
        Net = net;
        KernelArgs = kernelArgs;
        Keys = new KeyPair(dir.Path);
    }

    public TempDir Dir { get; }
    /// <summary>Added to both guests' kernel command line.</summary>
    public string? KernelArgs { get; }
    public NamespacePair? Net { get; }
    public KeyPair Keys { get; }
    public string SourceImage => Dir["src.img"];
    public string SourceMap => Dir["src.map"];
    public string ImageDir => Dir["dst"];
    public string GateDir => Dir["gates"];
    public string DestinationImage => Path.Combine(ImageDir, "vda.img");
    public string DestinationMap => Path.Combine(GateDir, "vda.map");
    public NbdkitServer SourceShim { get; private set; } = null!;
    public NbdkitServer DestinationShim { get; private set; } = null!;
    public QemuGuest Source { get; private set; } = null!;
    public string ListenAddress => Net?.DestinationAddress ?? "127.0.0.1";

    /// <summary>Images, shims and the source guest (booted and writing).</summary>
    public static async Task<WholeVmTestbed> StartAsync(string tag, string? rate = null, string? kernelArgs = null)
    {
        var dir = new TempDir("vm-" + tag);
        NamespacePair? net = null;
        try
        {
            if (rate != null) net = await NamespacePair.CreateAsync(tag, rate);
            var bed = new WholeVmTestbed(dir, net, kernelArgs);
            try
            {
                await bed.SetUpAsync();
                return bed;
            }
            catch
            {
                bed.Dispose();
                throw;
            }
        }
        catch
        {
            net?.Dispose();
            dir.Dispose();
            throw;
        }
    }

    private async Task SetUpAsync()
    {
        using (var f = File.Create(SourceImage))
        {
            f.SetLength(DiskBytes);
            f.Position = DiskBytes - FillBytes;
            var chunk = new byte[1 << 20];
            for (long done = 0; done < FillBytes; done += chunk.Length)
            {
                RandomNumberGenerator.Fill(chunk);
                f.Write(chunk);
            }
        }
        Directory.CreateDirectory(ImageDir);
        Directory.CreateDirectory(GateDir);
        await Tool.CheckAsync("truncate", ["-s", $"{DiskBytes}", DestinationImage]);
        using (var gate = DirtyMap.Create(DestinationMap, (ulong)DiskBytes, 4096))
            gate.SetState(MapState.Gate);
        SourceShim = Own(NbdkitServer.Start(Dir.Path, NbdkitServer.FilterArgs(SourceImage, SourceMap)));
        DestinationShim = Own(NbdkitServer.Start(Dir.Path, NbdkitServer.FilterArgs(DestinationImage, DestinationMap, gate: true)));
        Source = Own(QemuGuest.Start(Dir.Path, Options("src", SourceShim, Net?.Source, incoming: false)));
        await Source.Serial.WaitForAsync(@"PROGRESS seq=100\b", TimeSpan.FromSeconds(90));
    }

    private QemuGuestOptions Options(string name, NbdkitServer disk, string? ns, bool incoming) => new()
    {
        Name = name, DiskSocket = disk.Socket, Blocks = GuestBlocks, MemoryMiB = GuestMemoryMiB, Namespace = ns,
        Incoming = incoming, Paused = incoming, KernelArgs = KernelArgs,
    };

    /// <summary>A fresh destination QEMU (<c>-incoming defer -S</c>) on the destination shim.</summary>
    public QemuGuest StartDestination() =>
        Own(QemuGuest.Start(Dir.Path, Options($"dst{++_destinations}", DestinationShim, Net?.Destination, incoming: true)));

    /// <summary><c>blockmigrate receive --once</c> in the destination namespace; returns it and its HOST:PORT.</summary>
    public async Task<(BackgroundProcess Receiver, string Address)> StartReceiverAsync()
    {
        var p = Own(BackgroundProcess.CliIn(Net?.Destination, "receive", "--listen", $"{ListenAddress}:0", "--image-dir", ImageDir,
            "--once", "--gate-map-dir", GateDir, "--key", Keys.ReceiverKey, "--trusted", Keys.Trusted));
        var m = await p.WaitForLineAsync(@"^listening on [^\s]+:(\d+)$", TimeSpan.FromSeconds(30));
        return (p, $"{ListenAddress}:{m.Groups[1].Value}");
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

    /// <summary>The random fill (the part of the disk the guest does not write) equals the source's.</summary>
    public bool FillMatches()
    {
        static byte[] Hash(string path)
        {
            using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            f.Position = DiskBytes - FillBytes;
            return SHA256.HashData(f);
        }
        return Hash(SourceImage).AsSpan().SequenceEqual(Hash(DestinationImage));
    }

    public T Own<T>(T d) where T : IDisposable
    {
        lock (_owned) _owned.Add(d);
        return d;
    }

    public void Dispose()
    {
        lock (_owned)
        {
            for (var i = _owned.Count - 1; i >= 0; i--)
            {
                try { _owned[i].Dispose(); }
                catch (Exception e) { TestContext.Out.WriteLine($"teardown: {e.Message}"); }
            }
            _owned.Clear();
        }
        Net?.Dispose();
        try { File.Delete(SourceMap + ".outstanding"); } catch (IOException) { }
        Dir.Dispose();
    }
}
