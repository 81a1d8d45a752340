using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>A receiver that runs out of space says so, to the source and in its log; the source is untouched.</summary>
[CancelAfter(60_000)]
public class DiskFullTests
{
    [Test]
    public async Task Receiver_disk_full_is_a_clear_error_and_the_source_is_untouched()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, 16L << 20, 8L << 20);
        var hash = source.Hash();
        var small = Directory.CreateDirectory(dir["small"]).FullName;
        await Tool.CheckAsync("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", small]);
        try
        {
            using var receiver = await ReceiverProcess.StartAsync(small, keys);
            var run = await MigrateRun.RunAsync(source, receiver.Address, keys);

            Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
            Assert.That(run.Error, Does.Contain("disk full").And.Contain("No space left on device"));
            Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(20)), Is.EqualTo(1));
            Assert.That(receiver.Process.Stderr, Does.Contain("disk full"));
            Assert.That(source.Hash(), Is.EqualTo(hash));
            Assert.That(source.Map.Info().ThrottleBytesPerSecond, Is.Zero);
            Assert.That(source.Map.Info().DirtyBlocks, Is.GreaterThan(0ul), "what did not arrive is still dirty");
        }
        finally
        {
            await Tool.RunAsync("umount", ["-l", small]);
        }
    }
}
