using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Shim.Tests;

/// <summary>An image, its dirty map and nbdkit + the filter serving them; all removed on Dispose.</summary>
public sealed class ShimHarness : IDisposable
{
    public const int K = 1024;

    private ShimHarness(TempDir dir, string image, string mapPath, NbdkitServer server)
    {
        Dir = dir;
        Image = image;
        MapPath = mapPath;
        Server = server;
        Map = DirtyMap.Open(mapPath);
    }

    public TempDir Dir { get; }
    public string Image { get; }
    public string MapPath { get; }
    public NbdkitServer Server { get; }
    public DirtyMap Map { get; }
    public string Uri => Server.Uri;

    public static ShimHarness Start(long imageSize, string? blockSize = null, IEnumerable<string>? innerFilters = null,
        IEnumerable<string>? extra = null, Action<string>? prepareImage = null)
    {
        var dir = new TempDir("shim");
        NbdkitServer? server = null;
        try
        {
            var image = dir["disk.img"];
            using (var f = File.Create(image)) f.SetLength(imageSize);
            prepareImage?.Invoke(image);
            var map = dir["disk.map"];
            // these tests reason in 64 KiB blocks unless told otherwise (the filter's own default is 4 KiB)
            server = NbdkitServer.Start(dir.Path, NbdkitServer.FilterArgs(image, map, blockSize ?? "64K", innerFilters: innerFilters, extra: extra));
            // the filter creates the map when the export is set up; give it a first connection
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (!File.Exists(map) && DateTime.UtcNow < deadline)
            {
                Tool.RunAsync("nbdinfo", ["--size", server.Uri], TimeSpan.FromSeconds(10)).GetAwaiter().GetResult();
                if (!File.Exists(map)) Thread.Sleep(50);
            }
            return new ShimHarness(dir, image, map, server);
        }
        catch
        {
            // a refused start leaves nothing behind: no process, no files
            server?.Dispose();
            dir.Dispose();
            throw;
        }
    }

    /// <summary>qemu-io against the export with the given -c commands; fails the test if it fails.</summary>
    public Task QemuIoAsync(params string[] commands) =>
        Tool.CheckAsync("qemu-io", new[] { "-f", "raw" }.Concat(commands.SelectMany(c => new[] { "-c", c })).Append(Uri));

    /// <summary>nbdsh with handle h connected to the export.</summary>
    public Task NbdshAsync(string python) => Tool.CheckAsync("nbdsh", ["-u", Uri, "-c", python]);

    public List<BlockRange> Dirty() => Map.DirtyRanges();

    public void Dispose()
    {
        Map.Dispose();
        Server.Dispose();
        Dir.Dispose();
    }
}
