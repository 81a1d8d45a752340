using BlockMigrate.Protocol;

namespace BlockMigrate.Engine.Tests;

/// <summary>The frame format on its own: round trip, and every kind of damage caught by the reader.</summary>
[CancelAfter(10_000)]
public class FrameFormatTests
{
    [Test]
    public async Task Frames_round_trip_in_order()
    {
        var ms = new MemoryStream();
        var w = new FrameWriter(ms);
        await w.WriteAsync(FrameType.Ack, new byte[] { 1, 2, 3 });
        await w.WriteAsync(FrameType.Commit);
        ms.Position = 0;
        var r = new FrameReader(ms);
        var a = await r.ReadRequiredAsync("a", CancellationToken.None);
        var b = await r.ReadRequiredAsync("b", CancellationToken.None);
        Assert.That((a.Type, a.Sequence, a.Payload), Is.EqualTo((FrameType.Ack, 1ul, new byte[] { 1, 2, 3 })));
        Assert.That((b.Type, b.Sequence, b.Payload.Length), Is.EqualTo((FrameType.Commit, 2ul, 0)));
        Assert.That(await r.ReadAsync(CancellationToken.None), Is.Null, "clean end between frames");
    }

    [Test]
    public void Every_single_bit_flip_is_caught()
    {
        var frame = RawSourceBuild();
        for (var bit = 0; bit < frame.Length * 8; bit += 7)
        {
            var damaged = (byte[])frame.Clone();
            damaged[bit / 8] ^= (byte)(1 << (bit % 8));
            var r = new FrameReader(new MemoryStream(damaged));
            Assert.That(async () => await r.ReadAsync(CancellationToken.None), Throws.InstanceOf<ProtocolException>(), $"bit {bit}");
        }
    }

    [TestCase(DataEncoding.Lz4)]
    [TestCase(DataEncoding.Zstd)]
    public void Compressed_and_raw_data_decode_to_the_same_bytes(DataEncoding codec)
    {
        var text = System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Range(0, 4000).Select(i => $"compressible text {i % 97} ")));
        var scratch = new byte[BlockCodec.ScratchSize(text.Length)];
        var (encoding, body) = BlockCodec.Encode(text, scratch, codec);
        Assert.That(encoding, Is.EqualTo(codec));
        Assert.That(body.Length, Is.LessThan(text.Length / 4));
        var back = new byte[text.Length];
        BlockCodec.Decode(codec, body.Span, back);
        Assert.That(back, Is.EqualTo(text));

        var random = new byte[65536];
        Random.Shared.NextBytes(random);
        Assert.That(BlockCodec.Encode(random, new byte[BlockCodec.ScratchSize(random.Length)], codec).Encoding, Is.EqualTo(DataEncoding.Raw), "stored raw when compression does not pay");
    }

    [Test]
    public void Zstd_saves_more_than_lz4_on_repetitive_data()
    {
        var text = System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Range(0, 20000).Select(i => $"line {i}: the quick brown fox\n")));
        int Size(DataEncoding codec) => BlockCodec.Encode(text, new byte[BlockCodec.ScratchSize(text.Length)], codec).Body.Length;
        Assert.That(Size(DataEncoding.Zstd), Is.LessThan(Size(DataEncoding.Lz4)));
    }

    [TestCase(DataEncoding.Lz4)]
    [TestCase(DataEncoding.Zstd)]
    public void A_corrupt_compressed_body_is_a_protocol_error(DataEncoding codec)
    {
        var text = System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("compressible text ", 4000)));
        var body = BlockCodec.Encode(text, new byte[BlockCodec.ScratchSize(text.Length)], codec).Body.ToArray();
        var truncated = body[..(body.Length / 2)];
        Assert.That(() => BlockCodec.Decode(codec, truncated, new byte[text.Length]), Throws.InstanceOf<ProtocolException>());
        Assert.That(() => BlockCodec.Decode(codec, body, new byte[text.Length - 1]), Throws.InstanceOf<ProtocolException>(), "decodes to more than its range");
    }

    private static byte[] RawSourceBuild()
    {
        var payload = new byte[DataHeader.Size + 100];
        new DataHeader(0, DataEncoding.Raw, 0, 100).Write(payload);
        return RawSource.Build(FrameType.Data, 1, payload);
    }
}
