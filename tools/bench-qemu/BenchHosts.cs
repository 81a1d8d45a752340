using BlockMigrate.TestSupport;

namespace BlockMigrate.Bench.Qemu;

/// <summary>
/// The two "hosts" of one run: network namespaces joined by a shaped veth; the source image (guest area
/// plus random fill) and an empty destination image, each served by nbdkit on a unix socket; the source
/// guest booted and writing in the source namespace; the destination QEMU waiting in the other.
/// </summary>
public sealed class BenchHosts : IDisposable
{
    private readonly TempDir _dir;
    private readonly List<IDisposable> _owned = [];

    private BenchHosts(TempDir dir, NamespacePair net, BenchSettings settings)
    {
        _dir = dir;
        Net = net;
        Settings = settings;
    }

    public BenchSettings Settings { get; }
    public NamespacePair Net { get; }
    public string Directory => _dir.Path;
    public string SourceImage => _dir["src.img"];
    public string DestinationImage => _dir["dst.img"];
    public string SourceDiskSocket { get; private set; } = "";
    public string DestinationDiskSocket { get; private set; } = "";
    public NbdkitServer SourceDisk { get; private set; } = null!;
    public NbdkitServer DestinationDisk { get; private set; } = null!;
    public QemuGuest Source { get; private set; } = null!;
    public QemuGuest Destination { get; private set; } = null!;

    public static async Task<BenchHosts> StartAsync(BenchSettings settings)
    {
        var hosts = new BenchHosts(new TempDir("bench-qemu"), await NamespacePair.CreateAsync("bq", settings.Rate), settings);
        try
        {
            await hosts.StartAsync();
            return hosts;
        }
        catch
        {
            hosts.Dispose();
            throw;
        }
    }

    private async Task StartAsync()
    {
        var s = Settings;
        await MakeImageAsync(SourceImage, s.DiskBytes, fillFrom: (long)s.GuestBlocks * GuestDisk.BlockSize, fillBytes: s.FillBytes);
        await MakeImageAsync(DestinationImage, s.DiskBytes, 0, 0);
        var src = Own(NbdkitServer.Start(Directory, ["file", "file=" + SourceImage]));
        var dst = Own(NbdkitServer.Start(Directory, ["file", "file=" + DestinationImage]));
        SourceDisk = src;
        DestinationDisk = dst;
        SourceDiskSocket = src.Socket;
        DestinationDiskSocket = dst.Socket;
        Source = Own(QemuGuest.Start(Directory, Guest("src", SourceDiskSocket, Net.Source, incoming: false)));
        await Source.Serial.WaitForAsync(@"PROGRESS seq=200\b", TimeSpan.FromSeconds(90));
        Destination = Own(QemuGuest.Start(Directory, Guest("dst", DestinationDiskSocket, Net.Destination, incoming: true)));
    }

    private QemuGuestOptions Guest(string name, string disk, string ns, bool incoming) => new()
    {
        Name = name,
        DiskSocket = disk,
        Namespace = ns,
        Incoming = incoming,
        Paused = incoming,
        MemoryMiB = Settings.MemoryMiB,
        Blocks = Settings.GuestBlocks,
    };

    private static async Task MakeImageAsync(string path, long size, long fillFrom, long fillBytes)
    {
        await using var f = new FileStream(path, FileMode.Create, FileAccess.Write);
        f.SetLength(size);
        if (fillBytes <= 0)
            return;
        f.Position = fillFrom;
        var buffer = new byte[1 << 20];
        for (long done = 0; done < fillBytes; done += buffer.Length)
        {
            Random.Shared.NextBytes(buffer);
            await f.WriteAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, fillBytes - done)));
        }
    }

    private T Own<T>(T d) where T : IDisposable
    {
        _owned.Add(d);
        return d;
    }

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

    public void Dispose()
    {
        for (var i = _owned.Count - 1; i >= 0; i--)
            _owned[i].Dispose();
        Net.Dispose();
        _dir.Dispose();
    }
}
