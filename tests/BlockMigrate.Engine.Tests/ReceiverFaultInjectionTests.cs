using BlockMigrate.Receiver;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// A write or fsync error anywhere in the receiver fails the migration and loses nothing that was
/// acknowledged. The receiver runs in-process over a <see cref="SimulatedDisk"/> that fails one call
/// (EIO or ENOSPC) at each point of <see cref="StoragePoint"/> — its Nth call, for each N a run
/// reaches — and then loses, like a power cut, whatever was not fsynced. Each case shows: the source
/// exits 1 naming the error, the receiver does not commit (state file not "committed"), and after the
/// "reboot" a re-run of the same migration leaves the destination byte-identical to the source.
/// </summary>
[CancelAfter(300_000)]
public class ReceiverFaultInjectionTests
{
    private const long Size = 8L << 20, Random = 4L << 20;

    /// <summary>Every point, at each call a plain run makes of it (see <see cref="A_plain_run_reaches_every_fault_point"/>).</summary>
    private static IEnumerable<TestCaseData> Faults()
    {
        // (point, which call, whether the copy was under way by then: the source then keeps its bits for a resume)
        var points = new (StoragePoint Point, int Nth, bool UnderWay)[]
        {
            (StoragePoint.ImageTruncate, 1, false), // fresh copy: to 0
            (StoragePoint.ImageTruncate, 2, false), // then to the size
            (StoragePoint.DataWrite, 1, true),
            (StoragePoint.DataWrite, 3, true),
            (StoragePoint.ZeroWrite, 1, true),
            (StoragePoint.FlushSync, 1, false),     // the prepared image, before "partial"
            (StoragePoint.FlushSync, 2, true),      // the fsyncs before acks
            (StoragePoint.FlushSync, 3, true),
            (StoragePoint.CommitSync, 1, true),
            (StoragePoint.StateWrite, 1, false),    // "preparing": ftruncate, pwrite
            (StoragePoint.StateWrite, 4, false),    // "partial": pwrite
            (StoragePoint.StateWrite, 5, true),     // "committed": ftruncate
            (StoragePoint.StateWrite, 6, true),     // "committed": pwrite
            (StoragePoint.StateSync, 1, false),     // preparing, partial, committed
            (StoragePoint.StateSync, 2, false),
            (StoragePoint.StateSync, 3, true),
            (StoragePoint.StateRename, 1, false),
            (StoragePoint.StateRename, 2, false),
            (StoragePoint.StateRename, 3, true),
            (StoragePoint.DirSync, 1, false),
            (StoragePoint.DirSync, 2, false),
            (StoragePoint.DirSync, 3, true),        // after the rename to "committed": put back
        };
        foreach (var (errno, name) in new[] { (SimulatedDisk.EIO, "EIO"), (SimulatedDisk.ENOSPC, "ENOSPC") })
            foreach (var (point, nth, underWay) in points)
                yield return new TestCaseData(point, nth, underWay, errno).SetName($"{name} at {point} #{nth} fails the migration and loses no acknowledged block");
    }

    [TestCaseSource(nameof(Faults))]
    public Task Fault(StoragePoint point, int nth, bool underWay, int errno) => RunWithFaultAsync(Size, Random, "100M", point, nth, underWay, errno);

    /// <summary>
    /// The reported bug: a periodic fsync failed mid-copy and was ignored; Linux reports a writeback
    /// error once, so the commit's fsync succeeded and Committed was sent for data never on disk.
    /// A copy of several seconds, so that flushes fail while data is still streaming.
    /// </summary>
    [TestCase(SimulatedDisk.EIO)]
    [TestCase(SimulatedDisk.ENOSPC)]
    public Task A_failed_fsync_mid_copy_is_not_hidden_by_the_next_one(int errno) =>
        RunWithFaultAsync(32L << 20, 20L << 20, "40M", StoragePoint.FlushSync, 3, true, errno);

    private static async Task RunWithFaultAsync(long size, long random, string bandwidth, StoragePoint point, int nth, bool underWay, int errno)
    {
        using var dir = new TempDir("fault");
        using var source = SourceShim.Start(dir.Path, size, random);
        var hash = source.Hash();
        var keys = new KeyPair(dir.Path);
        var disk = new SimulatedDisk(Directory.CreateDirectory(dir["dst"]).FullName, Directory.CreateDirectory(dir["shadow"]).FullName)
        {
            Fault = (point, nth, errno),
        };
        await using (var receiver = await InProcessReceiver.StartAsync(dir["dst"], disk, keys: keys))
        {
            // capped so that several frames, and several fsync rounds, go by
            var run = await MigrateRun.RunAsync(source, receiver.Address, keys, "--bandwidth", bandwidth);
            Assert.That(disk.Fired, $"the run reached {point} #{nth}");
            Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
            Assert.That(run.Error, Does.Contain(errno == SimulatedDisk.ENOSPC ? "No space left on device" : "Input/output error"), run.ToString());
            if (underWay)
                Assert.That(run.Error, Does.Contain("receiver failed").And.Contain("a re-run resumes"), "the source says it keeps its bits");
            Assert.That(await receiver.ExitCodeAsync(TimeSpan.FromSeconds(30)), Is.EqualTo(1), "not committed\n" + receiver.Log);
            Assert.That(receiver.Status("vda"), Is.Not.EqualTo("committed"), receiver.Log);
        }
        Assert.That(source.Hash(), Is.EqualTo(hash), "the source is untouched");

        // the destination loses power: only what was fsynced is left; the admin runs the migration again
        disk.Revert();
        Assert.That(File.Exists(Path.Combine(dir["dst"], "vda.img.blockmigrate-state")) ? File.ReadAllText(Path.Combine(dir["dst"], "vda.img.blockmigrate-state")) : "",
            Does.Not.Contain("\"committed\""), "not committed after the reboot either");
        await using (var receiver = await InProcessReceiver.StartAsync(dir["dst"], keys: keys))
        {
            var run = await MigrateRun.RunAsync(source, receiver.Address, keys, "--verify");
            Assert.That(run.ExitCode, Is.Zero, run + "\n" + receiver.Log);
            Assert.That(run.Report.GetProperty("verified").GetBoolean(), Is.True);
            Assert.That(await receiver.ExitCodeAsync(TimeSpan.FromSeconds(30)), Is.Zero);
            if (underWay) Assert.That(run.Report.GetProperty("resumed").GetBoolean(), Is.True, "the re-run resumes from the acknowledged blocks");
            TestContext.Out.WriteLine($"re-run: resumed {run.Report.GetProperty("resumed")}, {run.Report.GetProperty("bytes_to_send")} bytes to send");
        }
        Assert.That(Sha(Path.Combine(dir["dst"], "vda.img")), Is.EqualTo(hash), "the destination is byte-identical to the source");
    }

    /// <summary>The list above is complete: a run without faults calls every point at least as often as the cases assume.</summary>
    [Test]
    public async Task A_plain_run_reaches_every_fault_point()
    {
        using var dir = new TempDir("fault");
        using var source = SourceShim.Start(dir.Path, Size, Random);
        var disk = new SimulatedDisk(Directory.CreateDirectory(dir["dst"]).FullName, Directory.CreateDirectory(dir["shadow"]).FullName);
        await using var receiver = await InProcessReceiver.StartAsync(dir["dst"], disk);
        var run = await MigrateRun.RunAsync(source, receiver.Address, null, "--bandwidth", "100M");
        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        var calls = Enum.GetValues<StoragePoint>().ToDictionary(p => p, disk.Calls);
        TestContext.Out.WriteLine(string.Join(", ", calls.Select(c => $"{c.Key} {c.Value}")));
        foreach (var c in Faults().Select(t => ((StoragePoint)t.Arguments[0]!, (int)t.Arguments[1]!)))
            Assert.That(calls[c.Item1], Is.GreaterThanOrEqualTo(c.Item2), $"{c.Item1} is called at least {c.Item2} times");
        Assert.That(Enum.GetValues<StoragePoint>().Where(p => calls[p] == 0), Is.Empty, "every point is reached");
    }

    internal static string Sha(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(f));
    }
}
