using System.Buffers.Binary;
using BlockMigrate.Protocol;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>The receiver checks every frame whole before acting on it: a damaged one is an error and nothing is written.</summary>
[CancelAfter(60_000)]
public class BadFrameTests
{
    private static readonly byte[] Data = Enumerable.Repeat((byte)0x5a, 65536).ToArray();

    public static IEnumerable<TestCaseData> BadFrames()
    {
        yield return new TestCaseData((Func<ulong, byte[]>)(seq =>
        {
            var f = RawSource.Build(FrameType.Data, seq, RawSource.DataPayload(0, Data));
            f[^100] ^= 0x01; // one bit flipped on the wire
            return f;
        }), "failed its checksum").SetName("Corrupt_frame_fails_its_checksum_and_nothing_is_written");
        yield return new TestCaseData((Func<ulong, byte[]>)(seq =>
            RawSource.Build(FrameType.Data, seq, RawSource.DataPayload(0, Data))[..5000]), "truncated frame")
            .SetName("Truncated_frame_is_refused_and_nothing_is_written");
        yield return new TestCaseData((Func<ulong, byte[]>)(seq =>
        {
            var f = RawSource.Build(FrameType.Data, seq, RawSource.DataPayload(0, Data));
            BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(16), 100u << 20);
            return f;
        }), "oversized frame").SetName("Oversized_frame_is_refused_before_it_is_read");
        yield return new TestCaseData((Func<ulong, byte[]>)(seq =>
            RawSource.Build(FrameType.Data, seq + 5, RawSource.DataPayload(0, Data))), "out of sequence")
            .SetName("Frame_out_of_sequence_is_refused");
        yield return new TestCaseData((Func<ulong, byte[]>)(seq =>
            RawSource.Build(FrameType.Data, seq, RawSource.DataPayload(2 << 20, Data))), "past the end")
            .SetName("Data_past_the_end_of_the_disk_is_refused");
        yield return new TestCaseData((Func<ulong, byte[]>)(seq =>
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray()), "bad frame magic")
            .SetName("Garbage_instead_of_a_frame_is_refused");
    }

    [TestCaseSource(nameof(BadFrames))]
    public async Task Bad_frame(Func<ulong, byte[]> build, string error)
    {
        using var dir = new TempDir("engine");
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys: null);
        await using (var source = await RawSource.ConnectAsync(receiver.Port))
        {
            Assert.That((await source.HelloAsync("vda")).Type, Is.EqualTo(FrameType.Welcome));
            var frame = build(source.NextSequence);
            await source.Stream.WriteAsync(frame);
            source.Stream.Socket.Shutdown(System.Net.Sockets.SocketShutdown.Send);
            Assert.That(await source.ErrorAsync(), Does.Contain(error));
        }
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(20)), Is.EqualTo(1));
        Assert.That(receiver.Process.Stderr, Does.Contain(error));
        var image = await File.ReadAllBytesAsync(receiver.Image("vda"));
        Assert.That(image.All(b => b == 0), Is.True, "nothing written");
    }

    [Test]
    public async Task Good_frame_is_written_and_acknowledged()
    {
        using var dir = new TempDir("engine");
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys: null);
        await using var source = await RawSource.ConnectAsync(receiver.Port);
        Assert.That((await source.HelloAsync("vda")).Type, Is.EqualTo(FrameType.Welcome));
        var seq = source.NextSequence;
        await source.SendAsync(FrameType.Data, RawSource.DataPayload(65536, Data));
        var ack = await source.Reader.ReadRequiredAsync("ack", CancellationToken.None);
        Assert.That(ack.Type, Is.EqualTo(FrameType.Ack));
        Assert.That(BitConverter.ToUInt64(ack.Payload), Is.EqualTo(seq));
        var image = await File.ReadAllBytesAsync(receiver.Image("vda"));
        Assert.That(image.AsSpan(65536, 65536).SequenceEqual(Data), Is.True);
    }
}
