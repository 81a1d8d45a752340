using System.Security.Cryptography;
using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>A source disk: an image with some content, nbdkit + the filter serving it, and its dirty map.</summary>
public sealed class SourceShim : IDisposable
{
    private SourceShim(string image, string mapPath, NbdkitServer server)
    {
        Image = image;
        MapPath = mapPath;
        Server = server;
        Map = DirtyMap.Open(mapPath);
    }

    public string Image { get; }
    public string MapPath { get; }
    public NbdkitServer Server { get; }
    public DirtyMap Map { get; }
    public string Uri => Server.Uri;
    public string DiskArg(string name = "vda") => $"{name}={Image}:{MapPath}";

    /// <summary>
    /// An image of <paramref name="size"/> bytes: random data in its second eighth (<paramref name="randomBytes"/>
    /// bytes), text after it, the rest holes; served with the given map block size.
    /// </summary>
    public static SourceShim Start(string dir, long size, long randomBytes = 4 << 20, string? blockSize = null)
    {
        var image = Path.Combine(dir, "source.img");
        using (var f = File.Create(image))
        {
            f.SetLength(size);
            f.Position = size / 8;
            var random = new byte[1 << 20];
            for (long done = 0; done < randomBytes; done += random.Length)
            {
                RandomNumberGenerator.Fill(random);
                f.Write(random, 0, (int)Math.Min(random.Length, randomBytes - done));
            }
            var text = System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Range(0, 20000).Select(i => $"line {i}: the quick brown fox\n")));
            f.Write(text);
        }
        return Serve(dir, "source.img", blockSize);
    }

    /// <summary>Serves an image already made in <paramref name="dir"/> (the map beside it), with the given map block size.</summary>
    public static SourceShim Serve(string dir, string imageName, string? blockSize = null)
    {
        var image = Path.Combine(dir, imageName);
        var map = Path.Combine(dir, "source.map");
        var server = NbdkitServer.Start(dir, NbdkitServer.FilterArgs(image, map, blockSize));
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!File.Exists(map) && DateTime.UtcNow < deadline)
        {
            Tool.RunAsync("nbdinfo", ["--size", server.Uri], TimeSpan.FromSeconds(10)).GetAwaiter().GetResult();
            if (!File.Exists(map)) Thread.Sleep(50);
        }
        return new SourceShim(image, map, server);
    }

    public string Hash()
    {
        using var f = File.OpenRead(Image);
        return Convert.ToHexString(SHA256.HashData(f));
    }

    public void Dispose()
    {
        Map.Dispose();
        Server.Dispose();
    }
}
