using System.Globalization;
using System.Text.RegularExpressions;
using BlockMigrate.Maps;
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
        public int StateSyncs, FlushSyncs;
        public SafeFileHandle Open(SafeFileHandle dir, string name, bool create) => PosixStorage.Instance.Open(dir, name, create);
        public void Write(SafeFileHandle file, ReadOnlySpan<byte> data, long offset, StoragePoint point) => PosixStorage.Instance.Write(file, data, offset, point);
        public void Zero(SafeFileHandle file, long offset, long length, StoragePoint point) => PosixStorage.Instance.Zero(file, offset, length, point);
        public void Truncate(SafeFileHandle file, long length, StoragePoint point) => PosixStorage.Instance.Truncate(file, length, point);

        public void Sync(SafeFileHandle file, StoragePoint point)
        {
            if (point == StoragePoint.FlushSync) Interlocked.Increment(ref FlushSyncs);
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

    /// <summary>
    /// The gate hand-over's ack: every data frame before the final set was acknowledged (so fsynced), and the
    /// final set writes nothing to the image, so the receiver acknowledges it after its "handed-over" record
    /// without another image fsync (measured at 100 Mbit/s: that fsync was most of the 35 ms the hand-over
    /// waited). Data after it is fsynced before its ack as always.
    /// </summary>
    [Test]
    public async Task The_final_sets_ack_costs_no_image_fsync_when_nothing_was_written_since_the_last()
    {
        using var dir = new TempDir("record");
        var gates = Directory.CreateDirectory(dir["gates"]).FullName;
        const ulong size = 1 << 20;
        using var gate = DirtyMap.Create(Path.Combine(gates, "vda.map"), size, 4096);
        gate.SetState(MapState.Gate);
        var storage = new SlowStateSync(TimeSpan.Zero);
        await using var receiver = await InProcessReceiver.StartAsync(dir["dst"], storage: storage, gateDir: gates);
        await using var s = await RawSource.ConnectAsync(receiver.Port);
        var hello = new HelloMessage(HelloMessage.CurrentVersion, [new DiskOffer("vda", size, 4096, new string('a', 32), Resume: false)]);
        await s.SendAsync(FrameType.Hello, ProtocolJson.Encode(hello, ProtocolJson.Default.HelloMessage));
        using (var frame = await s.Reader.ReadRequiredAsync("welcome", CancellationToken.None))
            Assert.That(ProtocolJson.Decode(frame, FrameType.Welcome, ProtocolJson.Default.WelcomeMessage).Disks[0].Gated, Is.True);

        var data = s.NextSequence;
        await s.SendAsync(FrameType.Data, RawSource.DataPayload(0, Enumerable.Repeat((byte)0x42, (int)size).ToArray()));
        await WaitAckAsync(s, data);
        var afterData = storage.FlushSyncs;
        Assert.That(afterData, Is.GreaterThanOrEqualTo(1), "data is fsynced before its ack");

        var final = s.NextSequence;
        await s.SendAsync(FrameType.FinalSet, new FinalSet(0, [new BlockRange(3, 4)]).Encode());
        await WaitAckAsync(s, final);
        Assert.That(receiver.Status("vda"), Is.EqualTo("handed-over"), "recorded before the ack");
        Assert.That(gate.Info().GatedBlocks, Is.EqualTo(2ul));
        Assert.That(storage.FlushSyncs, Is.EqualTo(afterData), "the final set's ack waited for no image fsync");

        var last = s.NextSequence;
        await s.SendAsync(FrameType.Data, RawSource.DataPayload(3 * 4096, Enumerable.Repeat((byte)0x43, 2 * 4096).ToArray()));
        await WaitAckAsync(s, last);
        Assert.That(storage.FlushSyncs, Is.GreaterThan(afterData), "the final blocks' data is fsynced before its ack");
    }

    private static async Task WaitAckAsync(RawSource s, ulong seq)
    {
        using var t = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (true)
        {
            using var f = await s.Reader.ReadAsync(t.Token) ?? throw new AssertionException("closed before the ack");
            if (f.Type == FrameType.Error) Assert.Fail("receiver: " + System.Text.Encoding.UTF8.GetString(f.Payload));
            if (f.Type == FrameType.Ack && AckMessage.Decode(f.Payload).Sequence >= seq) return;
        }
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
