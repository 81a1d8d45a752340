namespace BlockMigrate.Engine.Tests;

/// <summary><c>blockmigrate receive --once</c> on 127.0.0.1 with a free port, images in its own directory.</summary>
public sealed class ReceiverProcess : IDisposable
{
    private ReceiverProcess(BackgroundProcess process, int port, string imageDir)
    {
        Process = process;
        Port = port;
        ImageDir = imageDir;
    }

    public BackgroundProcess Process { get; }
    public int Port { get; }
    public string ImageDir { get; }
    public string Address => $"127.0.0.1:{Port}";
    public string Image(string disk) => Path.Combine(ImageDir, disk + ".img");

    public static async Task<ReceiverProcess> StartAsync(string imageDir, KeyPair? keys, params string[] extra)
    {
        Directory.CreateDirectory(imageDir);
        var args = new List<string> { "receive", "--listen", "127.0.0.1:0", "--image-dir", imageDir, "--once", "--gate-map-dir", Path.Combine(imageDir, "no-gates") };
        if (keys != null) args.AddRange(["--key", keys.ReceiverKey, "--trusted", keys.Trusted]);
        else args.Add("--plaintext");
        args.AddRange(extra);
        var p = BackgroundProcess.Cli(args.ToArray());
        try
        {
            var m = await p.WaitForLineAsync(@"^listening on [^\s]+:(\d+)$", TimeSpan.FromSeconds(30));
            return new ReceiverProcess(p, int.Parse(m.Groups[1].Value), imageDir);
        }
        catch
        {
            p.Dispose();
            throw;
        }
    }

    /// <summary>Like <see cref="StartAsync"/> but without --once: a service that keeps serving after each session.</summary>
    public static async Task<ReceiverProcess> StartServiceAsync(string imageDir, KeyPair? keys, params string[] extra)
    {
        Directory.CreateDirectory(imageDir);
        var args = new List<string> { "receive", "--listen", "127.0.0.1:0", "--image-dir", imageDir, "--gate-map-dir", Path.Combine(imageDir, "no-gates") };
        if (keys != null) args.AddRange(["--key", keys.ReceiverKey, "--trusted", keys.Trusted]);
        else args.Add("--plaintext");
        args.AddRange(extra);
        var p = BackgroundProcess.Cli(args.ToArray());
        try
        {
            var m = await p.WaitForLineAsync(@"^listening on [^\s]+:(\d+)$", TimeSpan.FromSeconds(30));
            return new ReceiverProcess(p, int.Parse(m.Groups[1].Value), imageDir);
        }
        catch
        {
            p.Dispose();
            throw;
        }
    }

    /// <summary>Waits until the disk's image holds at least <paramref name="bytes"/> allocated bytes (data has arrived).</summary>
    public async Task WaitForDataAsync(string disk, long bytes, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (File.Exists(Image(disk)))
            {
                var r = await TestSupport.Tool.RunAsync("stat", ["-c", "%b", Image(disk)]);
                if (long.TryParse(r.StandardOutput.Trim(), out var blocks) && blocks * 512 >= bytes) return;
            }
            await Task.Delay(100);
        }
        Assert.Fail($"no {bytes} bytes of {disk} arrived within {timeout}");
    }

    public void Dispose() => Process.Dispose();
}
