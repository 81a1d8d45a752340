using BlockMigrate.Maps;
using BlockMigrate.Protocol;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// The source's side of the protocol (SourceSession), the pooled frame buffers' ownership rule, and the
/// outstanding record written off the ack path (SourceDisk's background writer).
/// </summary>
[CancelAfter(60_000)]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class SourceSessionTests
{
    /// <summary>Reads what the "receiver" wrote beforehand; what the source writes goes nowhere.</summary>
    private sealed class ScriptedPeer(byte[] incoming) : Stream
    {
        private readonly MemoryStream _in = new(incoming);
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => _in.Read(buffer, offset, count);
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) { }
    }

    private sealed class Recorder : ISourceSessionEvents
    {
        public readonly List<ulong> Acks = [];
        public readonly TaskCompletionSource<BlockMigrateException> Failure = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public void Acked(ulong sequence) { lock (Acks) Acks.Add(sequence); }
        public void Committed() { }
        public void Verified(VerifyResultMessage result) { }
        public readonly List<SeedAnswer> Answers = [];
        public void SeedAnswered(SeedAnswer answer) { lock (Answers) Answers.Add(answer); }
        public void Failed(BlockMigrateException reason) => Failure.TrySetResult(reason);
    }

    private static async Task<byte[]> FramesAsync(params (FrameType Type, byte[] Payload)[] frames)
    {
        var m = new MemoryStream();
        var w = new FrameWriter(m);
        foreach (var (type, payload) in frames) await w.WriteAsync(type, payload);
        return m.ToArray();
    }

    private static async Task<(Recorder, BlockMigrateException)> RunAsync(int framesSent, byte[] incoming)
    {
        await using var session = new SourceSession(new ScriptedPeer(incoming));
        for (var i = 0; i < framesSent; i++) await session.SendAsync(FrameType.Data, new byte[16], default, CancellationToken.None);
        var events = new Recorder();
        session.Start(events);
        return (events, await events.Failure.Task.WaitAsync(TimeSpan.FromSeconds(20)));
    }

    [Test]
    public async Task Acks_are_decoded_little_endian_and_cumulative()
    {
        var (events, end) = await RunAsync(3, await FramesAsync((FrameType.Ack, new AckMessage(2).Encode()), (FrameType.Ack, [3, 0, 0, 0, 0, 0, 0, 0])));
        Assert.That(events.Acks, Is.EqualTo(new ulong[] { 2, 3 }));
        Assert.That(end.Message, Does.Contain("closed the connection"));
    }

    [Test]
    public async Task An_ack_of_the_wrong_length_ends_the_session()
    {
        var (events, end) = await RunAsync(3, await FramesAsync((FrameType.Ack, [1, 0, 0, 0])));
        Assert.That(end, Is.InstanceOf<ProtocolException>());
        Assert.That(end.Message, Does.Contain("ack frame of 4 bytes"));
        Assert.That(events.Acks, Is.Empty);
    }

    [Test]
    public async Task An_ack_past_the_frames_sent_ends_the_session()
    {
        var (events, end) = await RunAsync(2, await FramesAsync((FrameType.Ack, new AckMessage(3).Encode())));
        Assert.That(end.Message, Does.Contain("acknowledged frame 3, but only 2 were sent"));
        Assert.That(events.Acks, Is.Empty);
    }

    [Test]
    public async Task An_Error_frame_is_the_receivers_line_made_printable()
    {
        var (_, end) = await RunAsync(1, await FramesAsync((FrameType.Error, "disk full\nforged line"u8.ToArray())));
        Assert.That(end, Is.InstanceOf<RemoteFailureException>());
        Assert.That(end.Message, Does.StartWith("receiver failed: disk full?forged line"));
    }

    [Test]
    public async Task A_frames_buffer_is_the_frames_until_dispose_and_never_after()
    {
        var bytes = await FramesAsync((FrameType.Data, Enumerable.Repeat((byte)7, 100_000).ToArray()), (FrameType.Data, new byte[100_000]));
        var reader = new FrameReader(new MemoryStream(bytes));
        var first = await reader.ReadRequiredAsync("first", CancellationToken.None);
        var copy = first.Payload;
        Assert.That(first.Span.Length, Is.EqualTo(100_000));
        first.Dispose();
        Assert.Throws<ObjectDisposedException>(() => _ = first.Span.Length, "a disposed frame's buffer is not reachable through it");
        Assert.DoesNotThrow(first.Dispose, "a second Dispose returns nothing twice");
        using var second = await reader.ReadRequiredAsync("second", CancellationToken.None); // may reuse the first's buffer
        Assert.That(second.Span.ToArray(), Is.All.EqualTo(0));
        Assert.That(copy, Is.All.EqualTo(7), "Payload is a copy the caller keeps");
    }

    // ---- the outstanding record, off the ack path ----

    /// <summary>A disk whose blocks 0-9 are taken (out, recorded).</summary>
    private static SourceDisk DiskWithTenOut(TempDir dir)
    {
        using (var f = File.Create(dir["vda.img"])) f.SetLength(4 << 20);
        using (DirtyMap.Create(dir["vda.map"], 4 << 20, 64 * 1024)) { }
        var disk = new SourceDisk(0, new DiskSpec("vda", dir["vda.img"], dir["vda.map"]));
        disk.Cookie = new ResumeCookie(ResumeCookie.NewLineage(), new byte[12], CookieState.Running);
        disk.Map.MarkBlocks(0, 10);
        disk.Take(out _);
        return disk;
    }

    /// <summary>Blocks the record lists, or null if it is missing or invalid.</summary>
    private static int? RecordedBlocks(TempDir dir)
    {
        if (!File.Exists(dir["vda.map.outstanding"])) return null;
        var data = File.ReadAllBytes(dir["vda.map.outstanding"]);
        if (data[24] != 1) return null;
        var n = 0;
        for (var i = 32; i + 8 <= data.Length; i += 8) n += System.Numerics.BitOperations.PopCount(BitConverter.ToUInt64(data, i));
        return n;
    }

    [Test]
    public async Task Acknowledged_blocks_leave_the_record_soon_without_another_take()
    {
        using var dir = new TempDir("outstanding");
        using var disk = DiskWithTenOut(dir);
        Assert.That(RecordedBlocks(dir), Is.EqualTo(10), "a take writes the record at once");
        disk.Acknowledge(0, 4);
        disk.Acknowledge(4, 2); // coalesced with the first by the writer
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (RecordedBlocks(dir) != 4 && DateTime.UtcNow < deadline) await Task.Delay(20);
        Assert.That(RecordedBlocks(dir), Is.EqualTo(4), "the background writer wrote the state after the last ack");
    }

    [Test]
    public void Dispose_writes_the_last_state()
    {
        using var dir = new TempDir("outstanding");
        var disk = DiskWithTenOut(dir);
        for (ulong b = 0; b < 9; b++) disk.Acknowledge(b, 1);
        disk.Dispose();
        Assert.That(RecordedBlocks(dir), Is.EqualTo(1));
    }

    [Test]
    public void A_given_back_record_is_not_written_again_by_late_acks()
    {
        using var dir = new TempDir("outstanding");
        var disk = DiskWithTenOut(dir);
        disk.GiveBack();
        disk.Acknowledge(0, 1);
        disk.Dispose();
        Assert.That(File.Exists(dir["vda.map.outstanding"]), Is.False);
    }
}
