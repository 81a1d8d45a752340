using System.Globalization;
using System.Text.RegularExpressions;
using BlockMigrate.Protocol;
using BlockMigrate.Receiver;
using BlockMigrate.TestSupport;
using Microsoft.Win32.SafeHandles;
using NUnit.Framework;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// The switchover writes a durable state record per disk at the receiver before it answers (gate mode:
/// "handed-over"; commit mode: "committed"). The receiver times the one it writes while opening the disks
/// and says so in its Welcome (<see cref="WelcomeMessage.RecordMs"/>); the source's switchover estimate
/// uses it instead of assuming two round trips, which on a fast link with a slow disk under-predicted
/// the freeze-to-hand-over time several times over.
/// </summary>
[TestFixture]
public sealed class ReceiverRecordTimeTests
{
    /// <summary>The real storage, but each fsync of a state file's temporary copy takes <paramref name="delay"/> longer.</summary>
    private sealed class SlowStateSync(TimeSpan delay) : IReceiverStorage
    {
        public int StateSyncs;
        public SafeFileHandle Open(SafeFileHandle dir, string name, bool create) => PosixStorage.Instance.Open(dir, name, create);
        public void Write(SafeFileHandle file, ReadOnlySpan<byte> data, long offset, StoragePoint point) => PosixStorage.Instance.Write(file, data, offset, point);
        public void Zero(SafeFileHandle file, long offset, long length, StoragePoint point) => PosixStorage.Instance.Zero(file, offset, length, point);
        public void Truncate(SafeFileHandle file, long length, StoragePoint point) => PosixStorage.Instance.Truncate(file, length, point);

        public void Sync(SafeFileHandle file, StoragePoint point)
        {
            if (point == StoragePoint.StateSync)
            {
                Interlocked.Increment(ref StateSyncs);
                Thread.Sleep(delay);
            }
            PosixStorage.Instance.Sync(file, point);
        }

        public void Rename(string imageDir, string from, string to, StoragePoint point) => PosixStorage.Instance.Rename(imageDir, from, to, point);
    }

    [Test]
    public async Task A_slow_record_at_the_receiver_is_in_the_switchover_estimate()
    {
        using var dir = new TempDir("record");
        using var source = SourceShim.Start(dir.Path, 16 << 20, randomBytes: 1 << 20);
        var storage = new SlowStateSync(TimeSpan.FromMilliseconds(80));
        await using var receiver = await InProcessReceiver.StartAsync(dir["dst"], storage: storage);

        var run = await MigrateRun.RunAsync(source, receiver.Address, keys: null);

        Assert.That(run.ExitCode, Is.Zero, run.ToString);
        Assert.That(storage.StateSyncs, Is.GreaterThanOrEqualTo(3), "preparing, partial, committed");
        var said = Regex.Match(run.Stderr, @"a state record there: (\d+\.\d) ms \(timed there\)");
        Assert.That(said.Success, Is.True, run.Stderr);
        Assert.That(double.Parse(said.Groups[1].Value, CultureInfo.InvariantCulture), Is.GreaterThanOrEqualTo(80), "the receiver's Welcome: its record took the slow fsync");
        var measured = run.Report.GetProperty("downtime_ms").GetDouble();
        var estimate = run.Report.GetProperty("downtime_estimate_ms").GetDouble();
        Assert.That(measured, Is.GreaterThanOrEqualTo(80), "the commit's record is in the freeze-to-commit time");
        Assert.That(estimate, Is.GreaterThanOrEqualTo(80), $"and in the estimate (measured {measured} ms); two round trips on loopback would be well under 1 ms");
    }

    [Test]
    public async Task The_welcome_says_what_the_record_of_a_fresh_copy_took()
    {
        using var dir = new TempDir("record");
        var storage = new SlowStateSync(TimeSpan.FromMilliseconds(30));
        async Task<WelcomeMessage> GreetAsync(bool resume)
        {
            await using var receiver = await InProcessReceiver.StartAsync(dir["dst"], storage: storage);
            await using var s = await RawSource.ConnectAsync(receiver.Port);
            var hello = new HelloMessage(HelloMessage.CurrentVersion, [new DiskOffer("vda", 16 << 20, 4096, new string('a', 32), Resume: resume)]);
            await s.SendAsync(FrameType.Hello, ProtocolJson.Encode(hello, ProtocolJson.Default.HelloMessage));
            using var frame = await s.Reader.ReadRequiredAsync("welcome", CancellationToken.None);
            return ProtocolJson.Decode(frame, FrameType.Welcome, ProtocolJson.Default.WelcomeMessage);
        }
        Assert.That((await GreetAsync(resume: false)).RecordMs, Is.GreaterThanOrEqualTo(30), "a fresh copy records 'preparing' and 'partial': timed");
    }

    [TestCase("-1")]
    [TestCase("600001")]
    [TestCase("1e308")]
    [TestCase("\"12\"")]
    public void A_welcome_with_a_record_time_out_of_range_is_refused(string value)
    {
        var json = $$"""{"disks":[{"name":"vda","resume":false}],"record_ms":{{value}}}""";
        using var frame = new Frame(FrameType.Welcome, 0, System.Text.Encoding.UTF8.GetBytes(json));
        Assert.Throws<ProtocolException>(() => ProtocolJson.Decode(frame, FrameType.Welcome, ProtocolJson.Default.WelcomeMessage));
    }

    [TestCase("0", 0.0)]
    [TestCase("12.5", 12.5)]
    [TestCase("null", null)]
    public void A_welcome_record_time_in_range_or_left_out_is_taken(string value, double? expected)
    {
        var json = $$"""{"disks":[{"name":"vda","resume":false}],"record_ms":{{value}}}""";
        using var frame = new Frame(FrameType.Welcome, 0, System.Text.Encoding.UTF8.GetBytes(json));
        Assert.That(ProtocolJson.Decode(frame, FrameType.Welcome, ProtocolJson.Default.WelcomeMessage).RecordMs, Is.EqualTo(expected));
    }
}
