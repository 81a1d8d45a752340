using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>The codec follows the link: zstd when the link is slow and the bottleneck, LZ4 when it is fast; both decode exactly.</summary>
[CancelAfter(150_000)]
public class CodecTests
{
    private const long Size = 32L << 20;

    [Test]
    public async Task Auto_uses_zstd_on_a_slow_link_and_the_destination_gets_every_byte()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, 64L << 20, randomBytes: 2 << 20);
        // far more than the socket buffers on the way hold (~11 MB here), so the link shows as the bottleneck
        AppendText(source.Image, 16L << 20, 40 << 20);
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys);
        using var wan = BackgroundProcess.Python("wanem.py", "--listen", "127.0.0.1:0", "--to", receiver.Address, "--rate", "40M", "--delay", "5");
        var port = (await wan.WaitForLineAsync(@"^listening on [^\s]+:(\d+)$", TimeSpan.FromSeconds(20))).Groups[1].Value;

        var run = await MigrateRun.RunAsync(source, $"127.0.0.1:{port}", keys, "--verify");

        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        Assert.That(run.Stderr, Does.Contain("codec: zstd"));
        Assert.That(run.Report.GetProperty("bytes_zstd").GetInt64(), Is.GreaterThan(8L << 20), "much of the text went zstd-compressed");
        Assert.That(run.Report.GetProperty("verified").GetBoolean(), Is.True);
    }

    [Test]
    public async Task A_bandwidth_cap_under_40_MB_per_s_starts_with_zstd_and_codec_lz4_never_uses_it()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, Size, randomBytes: 1 << 20);
        AppendText(source.Image, 8L << 20, 2 << 20);

        using (var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys))
        {
            var run = await MigrateRun.RunAsync(source, receiver.Address, keys, "--bandwidth", "100M", "--verify");
            Assert.That(run.ExitCode, Is.Zero, run.ToString());
            Assert.That(run.Report.GetProperty("bytes_zstd").GetInt64(), Is.GreaterThan(1L << 20));
            Assert.That(run.Report.GetProperty("bytes_lz4").GetInt64(), Is.Zero);
            Assert.That(run.Report.GetProperty("verified").GetBoolean(), Is.True);
        }
        using (var receiver = await ReceiverProcess.StartAsync(dir["dst2"], keys))
        {
            var run = await MigrateRun.RunAsync(source, receiver.Address, keys, "--bandwidth", "100M", "--codec", "lz4", "--verify");
            Assert.That(run.ExitCode, Is.Zero, run.ToString());
            Assert.That(run.Report.GetProperty("bytes_zstd").GetInt64(), Is.Zero);
            Assert.That(run.Report.GetProperty("bytes_lz4").GetInt64(), Is.GreaterThan(1L << 20));
            Assert.That(run.Report.GetProperty("verified").GetBoolean(), Is.True);
        }
    }

    [Test]
    public async Task Auto_changes_to_lz4_when_the_producer_not_the_link_is_the_bottleneck()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, 256L << 20, randomBytes: 1 << 20);
        AppendText(source.Image, 40L << 20, 192 << 20, chunk: 1 << 20); // on loopback: seconds of zstd, unless it gives way
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys);

        var run = await MigrateRun.RunAsync(source, receiver.Address, keys);

        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        Assert.That(run.Stderr, Does.Contain("codec: zstd").And.Contain("codec: lz4 (socket"), "started with zstd, then gave way");
        Assert.That(run.Report.GetProperty("bytes_lz4").GetInt64(), Is.GreaterThan(64L << 20), "most of it went LZ4");
    }

    [Test]
    public async Task A_bad_codec_is_a_usage_error()
    {
        var run = await MigrateRun.RunArgsAsync("--disk", "vda=/nonexistent:/nonexistent", "--to", "127.0.0.1:1", "--plaintext", "--codec", "brotli");
        Assert.That(run.ExitCode, Is.EqualTo(2), run.ToString());
        Assert.That(run.Stderr, Does.Contain("brotli"));
    }

    /// <summary>Log-like text (compressible, and much more so by zstd than by LZ4) at <paramref name="offset"/>.</summary>
    private static void AppendText(string image, long offset, int bytes, int? chunk = null)
    {
        using var f = File.OpenWrite(image);
        f.Position = offset;
        var rng = new Random(7);
        var piece = chunk ?? bytes; // with a chunk: that much text, written again and again
        var text = new System.Text.StringBuilder();
        for (var i = 0; text.Length < piece; i++)
            text.Append($"{i:D8} host{rng.Next(20)} svc[{rng.Next(999)}]: ok {rng.Next(100000)}\n");
        var data = System.Text.Encoding.ASCII.GetBytes(text.ToString())[..piece];
        for (var done = 0; done < bytes; done += piece) f.Write(data, 0, Math.Min(piece, bytes - done));
    }
}
