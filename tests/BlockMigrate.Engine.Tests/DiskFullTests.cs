using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// A receiver that runs out of space during the copy says so, to the source and in its log; the source
/// is untouched. (Data that cannot fit from the start is refused at the offer: FreeSpaceTests.) Here the
/// offer fits, and the space is taken by someone else once the copy has begun.
/// </summary>
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
        await Tool.CheckAsync("mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", small]);
        try
        {
            using var receiver = await ReceiverProcess.StartAsync(Path.Combine(small, "dst"), keys);
            // 1 MB/s: the 8 MiB of data take seconds, the filler below lands long before they do
            var running = MigrateRun.RunAsync(source, receiver.Address, keys, "--bandwidth", "8M");
            await receiver.Process.WaitForStderrLineAsync("disk vda: receiving", TimeSpan.FromSeconds(60));
            await using (var filler = File.Create(Path.Combine(small, "filler")))
            {
                try
                {
                    for (var i = 0; i < 12; i++) await filler.WriteAsync(new byte[1 << 20]); // what fits of 12 MiB
                    await filler.FlushAsync();
                }
                catch (IOException) { }
            }
            var run = await running;

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
