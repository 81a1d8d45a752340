using System.Security.Cryptography;
using BlockMigrate.Maps;

namespace BlockMigrate.TestSupport;

/// <summary>How to build a <see cref="TwoHostBed"/>.</summary>
public sealed record TwoHostBedOptions
{
    /// <summary>Names the bed's directory (<see cref="TempDir"/> purpose).</summary>
    public required string DirTag { get; init; }

    /// <summary>With a value: the two sides live in two network namespaces named after it (<see cref="NamespacePair"/>).</summary>
    public string? NamespaceTag { get; init; }

    /// <summary>tc tbf rate of the namespaces' link (null = unshaped).</summary>
    public string? Rate { get; init; }

    public required long DiskBytes { get; init; }

    /// <summary>Where the source image's data starts, and how much there is.</summary>
    public long FillOffset { get; init; }
    public long FillBytes { get; init; }

    /// <summary>Writes the fill at the stream's position; null = random bytes.</summary>
    public Func<FileStream, long, Task>? Fill { get; init; }

    /// <summary>
    /// Both disks served by nbdkit with the BlockMigrate filter: the source with its dirty map
    /// (<see cref="TwoHostBed.SourceMap"/>), the destination in gate mode (<see cref="TwoHostBed.DestinationMap"/>,
    /// created in the gate state). False: nbdkit's file plugin alone on both (QEMU's own storage migration).
    /// </summary>
    public bool Shims { get; init; } = true;

    /// <summary>Block size of the destination's gate map.</summary>
    public uint GateBlockSize { get; init; } = GuestDisk.BlockSize;

    /// <summary>Serve the disks on fixed socket paths in the directory, so a restarted server is found where QEMU reconnects.</summary>
    public bool FixedSockets { get; init; }

    /// <summary>Start the source guest (tools/guest) on the source disk and wait for it to write.</summary>
    public bool Guest { get; init; } = true;
    public int GuestBlocks { get; init; } = 4096;
    public int GuestMemoryMiB { get; init; } = 96;
    public string? KernelArgs { get; init; }
    /// <summary>The source image is <c>a/vda.img</c>, where a receiver on the source host with image directory <c>a</c> finds it (the return trip).</summary>
    public bool SourceInImageDir { get; init; }

    /// <summary>The source guest's console line that says it is up and writing, and how long to wait for it.</summary>
    public string BootedPattern { get; init; } = @"PROGRESS seq=100\b";
    public TimeSpan BootTimeout { get; init; } = TimeSpan.FromSeconds(90);

    /// <summary>Runs once the namespaces exist, before the images are made.</summary>
    public Func<TwoHostBed, Task>? BeforeImages { get; init; }

    /// <summary>Where a process that fails to stop at teardown is reported (default: stderr).</summary>
    public Action<string>? TeardownLog { get; init; }
}

/// <summary>
/// The two "hosts" of a whole-VM migration on one machine, set up as an admin would; shared by the
/// Hypervisor tests' beds and tools/bench-qemu:
/// <list type="bullet">
/// <item>source: <see cref="SourceImage"/> (sparse, <see cref="TwoHostBedOptions.FillBytes"/> of data at
/// <see cref="TwoHostBedOptions.FillOffset"/>) served by nbdkit (the shim, with <see cref="SourceMap"/>),
/// and the source guest on it;</item>
/// <item>destination: an empty <see cref="DestinationImage"/> in <see cref="ImageDir"/> (where
/// <c>blockmigrate receive --image-dir</c> writes), its gate map <see cref="DestinationMap"/> in
/// <see cref="GateDir"/>, served by nbdkit (the shim in gate mode); destination QEMUs
/// (<c>-incoming defer -S</c>) and receivers on demand.</item>
/// </list>
/// Optionally each side in its own network namespace. Everything started through the bed is stopped by
/// PID on Dispose (last first), then the namespaces and the directory are removed.
/// </summary>
public sealed class TwoHostBed : IDisposable
{
    private readonly List<IDisposable> _owned = [];

    private TwoHostBed(TwoHostBedOptions options, TempDir dir)
    {
        Options = options;
        Dir = dir;
        Keys = new KeyPair(dir.Path);
    }

    public TwoHostBedOptions Options { get; }
    public TempDir Dir { get; }
    public NamespacePair? Net { get; private set; }
    public KeyPair Keys { get; }
    public string SourceImage => Options.SourceInImageDir ? Path.Combine(SourceImageDir, "vda.img") : Dir["src.img"];
    /// <summary>With <see cref="TwoHostBedOptions.SourceInImageDir"/>: the source host's receiver image directory, holding the source image.</summary>
    public string SourceImageDir => Dir["a"];
    public string SourceMap => Dir["src.map"];
    public string ImageDir => Dir["dst"];
    public string GateDir => Dir["gates"];
    public string DestinationImage => Path.Combine(ImageDir, "vda.img");
    public string DestinationMap => Path.Combine(GateDir, "vda.map");
    public NbdkitServer SourceDisk { get; private set; } = null!;
    public NbdkitServer DestinationDisk { get; private set; } = null!;
    /// <summary>The source guest (null with <see cref="TwoHostBedOptions.Guest"/> false).</summary>
    public QemuGuest Source { get; private set; } = null!;
    /// <summary>Where a receiver listens: the destination namespace's address, or loopback.</summary>
    public string ListenAddress => Net?.DestinationAddress ?? "127.0.0.1";

    public static async Task<TwoHostBed> StartAsync(TwoHostBedOptions options)
    {
        var bed = new TwoHostBed(options, new TempDir(options.DirTag));
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

    private async Task SetUpAsync()
    {
        var o = Options;
        if (o.NamespaceTag != null)
            Net = await NamespacePair.CreateAsync(o.NamespaceTag, o.Rate);
        if (o.BeforeImages != null)
            await o.BeforeImages(this);
        if (o.SourceInImageDir) Directory.CreateDirectory(SourceImageDir);
        await using (var f = new FileStream(SourceImage, FileMode.Create, FileAccess.Write))
        {
            f.SetLength(o.DiskBytes);
            if (o.FillBytes > 0)
            {
                f.Position = o.FillOffset;
                await (o.Fill ?? RandomFillAsync)(f, o.FillBytes);
            }
        }
        Directory.CreateDirectory(ImageDir);
        Directory.CreateDirectory(GateDir);
        using (var f = File.Create(DestinationImage))
            f.SetLength(o.DiskBytes);
        if (o.Shims)
        {
            using var gate = DirtyMap.Create(DestinationMap, (ulong)o.DiskBytes, o.GateBlockSize);
            gate.SetState(MapState.Gate);
        }
        RestartSourceDisk();
        RestartDestinationDisk();
        if (o.Guest)
        {
            Source = Own(QemuGuest.Start(Dir.Path, GuestOptions("src", SourceDisk.Socket, Net?.Source, incoming: false)));
            await Source.Serial.WaitForAsync(o.BootedPattern, o.BootTimeout);
        }
    }

    private static async Task RandomFillAsync(FileStream f, long bytes)
    {
        var chunk = new byte[1 << 20];
        for (long done = 0; done < bytes; done += chunk.Length)
        {
            RandomNumberGenerator.Fill(chunk);
            await f.WriteAsync(chunk.AsMemory(0, (int)Math.Min(chunk.Length, bytes - done)));
        }
    }

    /// <summary>(Re)starts the source disk's server on the same image and map (and socket, with fixed sockets), as an admin would after it died.</summary>
    public NbdkitServer RestartSourceDisk() => SourceDisk = Own(NbdkitServer.Start(Dir.Path,
        Options.Shims ? NbdkitServer.FilterArgs(SourceImage, SourceMap) : ["file", "file=" + SourceImage],
        socket: Options.FixedSockets ? Dir["src-shim.sock"] : null));

    /// <summary>(Re)starts the destination disk's server (the shim in gate mode) on the same image and gate map.</summary>
    public NbdkitServer RestartDestinationDisk() => DestinationDisk = Own(NbdkitServer.Start(Dir.Path,
        Options.Shims ? NbdkitServer.FilterArgs(DestinationImage, DestinationMap, gate: true) : ["file", "file=" + DestinationImage],
        socket: Options.FixedSockets ? Dir["dst-shim.sock"] : null));

    /// <summary>The guest's options: the same devices on both sides, as a migration needs.</summary>
    public QemuGuestOptions GuestOptions(string name, string diskSocket, string? ns, bool incoming) => new()
    {
        Name = name, DiskSocket = diskSocket, Blocks = Options.GuestBlocks, MemoryMiB = Options.GuestMemoryMiB,
        Namespace = ns, Incoming = incoming, Paused = incoming, KernelArgs = Options.KernelArgs,
    };

    /// <summary>A fresh destination QEMU (<c>-incoming defer -S</c>) on the destination disk, in the destination namespace.</summary>
    public QemuGuest StartDestination(string name) =>
        Own(QemuGuest.Start(Dir.Path, GuestOptions(name, DestinationDisk.Socket, Net?.Destination, incoming: true)));

    /// <summary><c>blockmigrate receive --once</c> into <see cref="ImageDir"/> gating through <see cref="GateDir"/>, in the destination namespace; returns it and its port.</summary>
    public async Task<(BackgroundProcess Receiver, int Port)> StartReceiverAsync(TimeSpan? timeout = null)
    {
        var p = Own(BackgroundProcess.CliIn(Net?.Destination, "receive", "--listen", $"{ListenAddress}:0", "--image-dir", ImageDir,
            "--once", "--gate-map-dir", GateDir, "--key", Keys.ReceiverKey, "--trusted", Keys.Trusted));
        var m = await p.WaitForLineAsync(@"^listening on [^\s]+:(\d+)$", timeout ?? TimeSpan.FromSeconds(30));
        return (p, int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
    }

    /// <summary><c>tools/wanem.py</c> on loopback in front of <paramref name="to"/>; returns it and the address to connect to.</summary>
    public async Task<(BackgroundProcess Wan, string Address)> StartWanAsync(string to, string rate, string delayMs)
    {
        var wan = Own(BackgroundProcess.Python("wanem.py", "--listen", "127.0.0.1:0", "--to", to, "--rate", rate, "--delay", delayMs));
        var port = (await wan.WaitForLineAsync(@"^listening on [^\s]+:(\d+)$", TimeSpan.FromSeconds(30))).Groups[1].Value;
        return (wan, "127.0.0.1:" + port);
    }

    /// <summary>The fill (the part of the disk the guest does not write, from <see cref="TwoHostBedOptions.FillOffset"/> on) equals the source's.</summary>
    public bool FillMatches()
    {
        byte[] Hash(string path)
        {
            using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            f.Position = Options.FillOffset;
            return SHA256.HashData(f);
        }
        return Hash(SourceImage).AsSpan().SequenceEqual(Hash(DestinationImage));
    }

    /// <summary>Stops <paramref name="d"/> when the bed is disposed (last owned, first stopped).</summary>
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
                catch (Exception e) { (Options.TeardownLog ?? Console.Error.WriteLine)($"teardown: {e.Message}"); }
            }
            _owned.Clear();
        }
        Net?.Dispose();
        try { File.Delete(SourceMap + ".outstanding"); } catch (IOException) { }
        Dir.Dispose();
    }
}
