using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>Failures before the commit leave the source as it was; a later run resumes instead of starting over.</summary>
[CancelAfter(150_000)]
public class AbortAndResumeTests
{
    private const long Size = 32L << 20, Random = 24L << 20;

    [Test]
    public async Task Killing_the_receiver_mid_transfer_leaves_the_source_untouched_and_resume_sends_less()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, Size, Random);
        var hash = source.Hash();
        ulong total;
        using (var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys))
        {
            // 24 MiB of random data at 40 Mbit/s: about 5 s; kill the receiver after 2
            var migrate = MigrateRun.RunAsync(source, receiver.Address, keys, "--bandwidth", "40M");
            await receiver.WaitForDataAsync("vda", 4L << 20, TimeSpan.FromSeconds(30));
            Assert.That(migrate.IsCompleted, Is.False, "still copying when the receiver dies");
            receiver.Process.Kill();
            var run = await migrate;

            Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
            Assert.That(run.Error, Does.StartWith("blockmigrate: ").And.Contain("receiver"));
            AssertUntouched(source, hash);
            total = source.Map.Info().Blocks;
        }
        var left = source.Map.Info().DirtyBlocks;
        Assert.That(left, Is.GreaterThan(0ul).And.LessThan(total), "acknowledged blocks are not dirty; the rest are");

        using (var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys))
        {
            var run = await MigrateRun.RunAsync(source, receiver.Address, keys, "--verify");
            Assert.That(run.ExitCode, Is.Zero, run.ToString());
            var report = run.Report;
            Assert.That(report.GetProperty("resumed").GetBoolean(), Is.True);
            Assert.That(report.GetProperty("verified").GetBoolean(), Is.True);
            Assert.That(report.GetProperty("bytes_of_data").GetInt64(), Is.LessThan(Random), "fewer bytes than a full copy");
            Assert.That(report.GetProperty("bytes_to_send").GetInt64(), Is.LessThan(Size));
        }
    }

    [Test]
    public async Task Cutting_the_link_mid_transfer_leaves_the_source_untouched_and_resume_finishes()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, Size, Random);
        var hash = source.Hash();
        using (var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys))
        using (var wan = BackgroundProcess.Python("wanem.py", "--listen", "127.0.0.1:0", "--to", receiver.Address, "--rate", "40M", "--delay", "10"))
        {
            var port = (await wan.WaitForLineAsync(@"^listening on [^\s]+:(\d+)$", TimeSpan.FromSeconds(20))).Groups[1].Value;
            var migrate = MigrateRun.RunAsync(source, $"127.0.0.1:{port}", keys);
            await receiver.WaitForDataAsync("vda", 4L << 20, TimeSpan.FromSeconds(30));
            Assert.That(migrate.IsCompleted, Is.False, "still copying when the link is cut");
            wan.Kill();
            var run = await migrate;

            Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
            Assert.That(run.Error, Does.Contain("receiver").Or.Contain("link"));
            AssertUntouched(source, hash);
            Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.EqualTo(1), "the receiver did not commit");
        }
        var left = source.Map.Info().DirtyBlocks;
        Assert.That(left, Is.GreaterThan(0ul).And.LessThan(source.Map.Info().Blocks));

        using (var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys))
        {
            var run = await MigrateRun.RunAsync(source, receiver.Address, keys, "--verify");
            Assert.That(run.ExitCode, Is.Zero, run.ToString());
            Assert.That(run.Report.GetProperty("resumed").GetBoolean(), Is.True);
            Assert.That(run.Report.GetProperty("verified").GetBoolean(), Is.True);
            Assert.That(run.Report.GetProperty("bytes_to_send").GetInt64(), Is.LessThan(Size));
        }
    }

    [Test]
    public async Task Ctrl_C_mid_transfer_leaves_the_source_untouched()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, Size, Random);
        var hash = source.Hash();
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys);
        using var migrate = BackgroundProcess.Cli("migrate", "--disk", source.DiskArg(), "--to", receiver.Address, "--key", keys.SourceKey,
            "--peer-fingerprint", keys.ReceiverFingerprint, "--bandwidth", "40M");
        await receiver.WaitForDataAsync("vda", 4L << 20, TimeSpan.FromSeconds(30));
        Assert.That(migrate.HasExited, Is.False, "still copying");
        System.Diagnostics.Process.Start("kill", ["-INT", migrate.Pid.ToString()])!.WaitForExit();

        Assert.That(await migrate.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.EqualTo(1), migrate.Stderr);
        Assert.That(migrate.Stderr.TrimEnd().Split('\n')[^1], Is.EqualTo("blockmigrate: migration cancelled; the source is untouched"));
        AssertUntouched(source, hash);
        Assert.That(source.Map.Info().DirtyBlocks, Is.GreaterThan(0ul).And.LessThan(source.Map.Info().Blocks));
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.EqualTo(1), "nothing committed");
    }

    [Test]
    public async Task Killing_migrate_itself_mid_transfer_is_resumed_from_its_outstanding_record()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, Size, Random);
        var hash = source.Hash();
        using (var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys))
        {
            using var migrate = BackgroundProcess.Cli("migrate", "--disk", source.DiskArg(), "--to", receiver.Address, "--key", keys.SourceKey,
                "--peer-fingerprint", keys.ReceiverFingerprint, "--bandwidth", "40M");
            await migrate.WaitForStderrLineAsync("phase: BulkCopy$", TimeSpan.FromSeconds(30));
            await Task.Delay(2000);
            Assert.That(migrate.HasExited, Is.False, "still copying");
            migrate.Kill(); // SIGKILL: no bit is given back
            Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.EqualTo(1), "nothing committed");
        }
        Assert.That(source.Hash(), Is.EqualTo(hash));
        Assert.That(File.Exists(source.MapPath + ".outstanding"), "the blocks it had out are on record");

        using (var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys))
        {
            var run = await MigrateRun.RunAsync(source, receiver.Address, keys, "--verify");
            Assert.That(run.ExitCode, Is.Zero, run.ToString());
            Assert.That(run.Report.GetProperty("resumed").GetBoolean(), Is.True, run.Stderr);
            Assert.That(run.Report.GetProperty("verified").GetBoolean(), Is.True);
            Assert.That(run.Report.GetProperty("bytes_to_send").GetInt64(), Is.LessThan(Size), "fewer bytes than a full copy");
            Assert.That(File.Exists(source.MapPath + ".outstanding"), Is.False, "the record goes with the commit");
        }
    }

    [Test]
    public async Task A_run_to_another_receiver_after_an_abort_copies_everything()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, Size, Random);
        using (var receiver = await ReceiverProcess.StartAsync(dir["dst1"], keys))
        {
            var migrate = MigrateRun.RunAsync(source, receiver.Address, keys, "--bandwidth", "40M");
            await receiver.WaitForDataAsync("vda", 4L << 20, TimeSpan.FromSeconds(30));
            receiver.Process.Kill();
            Assert.That((await migrate).ExitCode, Is.EqualTo(1));
        }
        Assert.That(source.Map.Info().DirtyBlocks, Is.LessThan(source.Map.Info().Blocks), "the map is relative to the first receiver");

        // the map's bits say what the first receiver lacks, nothing about a second one
        var other = KeyPair.WithNewReceiver(Directory.CreateDirectory(dir["other"]).FullName, keys);
        using var second = await ReceiverProcess.StartAsync(dir["dst2"], other);
        var run = await MigrateRun.RunAsync(source, second.Address, other, "--verify");
        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        Assert.That(run.Report.GetProperty("resumed").GetBoolean(), Is.False);
        Assert.That(run.Report.GetProperty("bytes_to_send").GetInt64(), Is.EqualTo(Size));
        Assert.That(run.Report.GetProperty("verified").GetBoolean(), Is.True);
    }

    private static void AssertUntouched(SourceShim source, string hash)
    {
        var info = source.Map.Info();
        Assert.That(info.ThrottleBytesPerSecond, Is.Zero, "throttle removed");
        Assert.That(info.State & (MapState.Frozen | MapState.Tracking), Is.EqualTo(MapState.None), "not frozen, not tracking for a migration");
        Assert.That(source.Hash(), Is.EqualTo(hash), "the source image is as it was");
    }
}
