using System.Text;
using BlockMigrate.Protocol;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// The offer says how much data the source's image holds (its allocated blocks); the receiver refuses it
/// when that exceeds the image directory's free space, and accepts a huge sparse disk that fits.
/// The image directory is a small tmpfs mounted for the test (root), unmounted after.
/// </summary>
[CancelAfter(180_000)]
public class FreeSpaceTests
{
    private TempDir _dir = null!;
    private string _small = null!;

    [SetUp]
    public async Task MountSmallFileSystem()
    {
        _dir = new TempDir("engine");
        _small = _dir["small"];
        Directory.CreateDirectory(_small);
        var r = await Tool.RunAsync("mount", ["-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", _small]);
        if (r.ExitCode != 0) Assert.Ignore($"cannot mount a tmpfs (needs root): {r.StandardError}");
    }

    [TearDown]
    public async Task Unmount()
    {
        await Tool.RunAsync("umount", ["-l", _small]);
        _dir.Dispose();
    }

    private static HelloMessage Hello(ulong size, ulong? allocated) =>
        new(HelloMessage.CurrentVersion, [new DiskOffer("vda", size, 65536, new string('a', 32), false, false, allocated)]);

    [Test]
    public async Task Offer_whose_data_exceeds_the_free_space_is_refused()
    {
        using var receiver = await ReceiverProcess.StartAsync(Path.Combine(_small, "dst"), keys: null);
        await using (var source = await RawSource.ConnectAsync(receiver.Port))
        {
            await source.SendAsync(FrameType.Hello, ProtocolJson.Encode(Hello(15ul << 40, 64ul << 20), ProtocolJson.Default.HelloMessage));
            var answer = await source.Reader.ReadRequiredAsync("answer", CancellationToken.None);
            Assert.That(answer.Type, Is.EqualTo(FrameType.Error));
            Assert.That(Encoding.UTF8.GetString(answer.Payload), Does.StartWith("not enough space in ").And.Contain("the source's data takes 64 MiB"));
        }
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.EqualTo(1));
        MalformedPeerTests.AssertNoCrash(receiver.Process.Stderr);
        Assert.That(Directory.GetFiles(receiver.ImageDir), Is.Empty, "nothing created");
    }

    [Test]
    public async Task Huge_sparse_disk_that_fits_is_accepted_with_a_warning()
    {
        using var receiver = await ReceiverProcess.StartAsync(Path.Combine(_small, "dst"), keys: null);
        await using var source = await RawSource.ConnectAsync(receiver.Port);
        await source.SendAsync(FrameType.Hello, ProtocolJson.Encode(Hello(1ul << 40, 8ul << 20), ProtocolJson.Default.HelloMessage));
        var answer = await source.Reader.ReadRequiredAsync("answer", CancellationToken.None);
        Assert.That(answer.Type, Is.EqualTo(FrameType.Welcome), receiver.Process.Stderr);
        await receiver.Process.WaitForStderrLineAsync("disk vda is 1099511627776 bytes, larger than the file system", TimeSpan.FromSeconds(10));
    }

    [Test]
    public async Task Space_held_by_the_earlier_image_counts_as_free()
    {
        // a 24 MiB image left by an earlier attempt: under 8 MiB free, but with the 24 MiB it holds 26 MiB of data fit
        var dst = Path.Combine(_small, "dst");
        Directory.CreateDirectory(dst);
        await File.WriteAllBytesAsync(Path.Combine(dst, "vda.img"), new byte[24 << 20]);
        using var receiver = await ReceiverProcess.StartAsync(dst, keys: null);
        await using var source = await RawSource.ConnectAsync(receiver.Port);
        await source.SendAsync(FrameType.Hello, ProtocolJson.Encode(Hello(64ul << 20, 26ul << 20), ProtocolJson.Default.HelloMessage));
        var answer = await source.Reader.ReadRequiredAsync("answer", CancellationToken.None);
        // (a receiver that refuses to overwrite a foreign image says so instead: not a space error)
        if (answer.Type == FrameType.Error)
            Assert.That(Encoding.UTF8.GetString(answer.Payload), Does.Not.Contain("not enough space"));
    }

    [Test]
    public async Task Migration_of_more_data_than_the_destination_holds_is_refused_at_the_offer()
    {
        using var source = SourceShim.Start(_dir.Path, 256L << 20, 48L << 20);
        using var receiver = await ReceiverProcess.StartAsync(Path.Combine(_small, "dst"), keys: null);

        var run = await MigrateRun.RunAsync(source, receiver.Address, null);

        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.Error, Does.Contain("not enough space in "));
        Assert.That(run.Error, Does.Match(@"the source's data takes 4[89](\.\d)? MiB"));
        Assert.That(source.Map.Info().DirtyBlocks, Is.Zero, "the map was not touched");
    }

    [Test]
    public async Task Sparse_disk_larger_than_the_destination_migrates()
    {
        using var source = SourceShim.Start(_dir.Path, 256L << 20, 4L << 20);
        using var receiver = await ReceiverProcess.StartAsync(Path.Combine(_small, "dst"), keys: null);

        var run = await MigrateRun.RunAsync(source, receiver.Address, null);

        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        Assert.That(receiver.Process.Stderr, Does.Contain("larger than the file system"));
    }
}
