using BlockMigrate.Protocol;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// The codec policy's law on explicit inputs (no migration, no clock): where it starts, when auto moves
/// between LZ4 and zstd, and that nothing moves a codec the admin fixed. CodecTests shows the same law
/// end to end over shaped links.
/// </summary>
public class CodecPolicyTests
{
    private static readonly IReadOnlyList<BlockCodec> Both = BlockCodec.Decodable(BlockCodec.Advertised);
    private static readonly IReadOnlyList<BlockCodec> Lz4Only = BlockCodec.Decodable(null);

    private static CodecPolicy Policy(CodecChoice choice, IReadOnlyList<BlockCodec>? decodable = null, double? cap = null, bool compress = true) =>
        new(compress, choice, cap, decodable ?? Both, now: 0);

    [Test]
    public void Auto_starts_with_zstd_unless_a_cap_says_the_link_is_fast()
    {
        Assert.That(Policy(CodecChoice.Auto).Initial(), Is.EqualTo((DataEncoding.Zstd, (string?)null)));
        Assert.That(Policy(CodecChoice.Auto, cap: 12.5e6).Initial().Codec, Is.EqualTo(DataEncoding.Zstd));
        Assert.That(Policy(CodecChoice.Auto, cap: CodecPolicy.Lz4Above - 1).Initial().Codec, Is.EqualTo(DataEncoding.Zstd));
        Assert.That(Policy(CodecChoice.Auto, cap: CodecPolicy.Lz4Above).Initial().Codec, Is.EqualTo(DataEncoding.Lz4));
    }

    [Test]
    public void A_receiver_without_zstd_gets_lz4_and_a_fixed_zstd_says_why()
    {
        Assert.That(Policy(CodecChoice.Auto, Lz4Only).Initial(), Is.EqualTo((DataEncoding.Lz4, (string?)null)));
        var (codec, note) = Policy(CodecChoice.Always(BlockCodec.Zstd), Lz4Only).Initial();
        Assert.That(codec, Is.EqualTo(DataEncoding.Lz4));
        Assert.That(note, Is.EqualTo("codec: the receiver does not decode zstd; using LZ4"));
        Assert.That(Policy(CodecChoice.Auto, Lz4Only).Adapts, Is.False, "nothing to move to");
    }

    [Test]
    public void Fixed_codecs_and_no_compression_never_adapt()
    {
        Assert.That(Policy(CodecChoice.Always(BlockCodec.Lz4)).Initial().Codec, Is.EqualTo(DataEncoding.Lz4));
        Assert.That(Policy(CodecChoice.Always(BlockCodec.Zstd)).Initial().Codec, Is.EqualTo(DataEncoding.Zstd));
        Assert.That(Policy(CodecChoice.Auto, compress: false).Initial().Codec, Is.EqualTo(DataEncoding.Raw));
        foreach (var p in new[] { Policy(CodecChoice.Always(BlockCodec.Lz4)), Policy(CodecChoice.Always(BlockCodec.Zstd)), Policy(CodecChoice.Auto, compress: false) })
        {
            Assert.That(p.Adapts, Is.False);
            // link-bound and slow: auto would take zstd; a fixed LZ4 stays
            Assert.That(p.Check(DataEncoding.Lz4, now: 1000, linkWait: 900, producerWait: 0, socketRate: 5e6), Is.EqualTo(DataEncoding.Lz4));
        }
    }

    [TestCase(DataEncoding.Lz4, true, false, 5e6, DataEncoding.Zstd, TestName = "LZ4, link-bound and slow: zstd")]
    [TestCase(DataEncoding.Lz4, true, false, CodecPolicy.ZstdBelow, DataEncoding.Zstd, TestName = "LZ4, link-bound at exactly 40 MB/s: zstd")]
    [TestCase(DataEncoding.Lz4, true, false, 50e6, DataEncoding.Lz4, TestName = "LZ4, link-bound between the thresholds: stays")]
    [TestCase(DataEncoding.Lz4, true, false, 0, DataEncoding.Lz4, TestName = "LZ4, no rate measured yet: stays")]
    [TestCase(DataEncoding.Lz4, false, true, 5e6, DataEncoding.Lz4, TestName = "LZ4, producer-bound: stays")]
    [TestCase(DataEncoding.Lz4, false, false, 5e6, DataEncoding.Lz4, TestName = "LZ4, between rounds: stays")]
    [TestCase(DataEncoding.Zstd, false, true, 5e6, DataEncoding.Lz4, TestName = "zstd, producer-bound: LZ4")]
    [TestCase(DataEncoding.Zstd, true, false, CodecPolicy.Lz4Above, DataEncoding.Lz4, TestName = "zstd, link-bound and fast: LZ4")]
    [TestCase(DataEncoding.Zstd, true, false, 50e6, DataEncoding.Zstd, TestName = "zstd, link-bound between the thresholds: stays")]
    [TestCase(DataEncoding.Zstd, true, false, 5e6, DataEncoding.Zstd, TestName = "zstd, link-bound and slow: stays")]
    [TestCase(DataEncoding.Zstd, false, false, 100e6, DataEncoding.Zstd, TestName = "zstd, between rounds: stays")]
    [TestCase(DataEncoding.Raw, true, false, 5e6, DataEncoding.Raw, TestName = "raw: stays")]
    public void The_law(DataEncoding current, bool linkBound, bool producerBound, double rate, DataEncoding expected) =>
        Assert.That(CodecPolicy.Decide(current, linkBound, producerBound, rate), Is.EqualTo(expected));

    [Test]
    public void Bound_means_more_than_half_of_the_interval_since_the_last_check()
    {
        var p = Policy(CodecChoice.Auto);
        // 0..1000: waited 500 on the link, exactly half: not bound
        Assert.That(p.Check(DataEncoding.Lz4, now: 1000, linkWait: 500, producerWait: 0, socketRate: 5e6), Is.EqualTo(DataEncoding.Lz4));
        // 1000..2000: 501 more: bound, slow: zstd
        Assert.That(p.Check(DataEncoding.Lz4, now: 2000, linkWait: 1001, producerWait: 0, socketRate: 5e6), Is.EqualTo(DataEncoding.Zstd));
        // 2000..3000: the producer's wait counts from this check on, not from the start
        Assert.That(p.Check(DataEncoding.Zstd, now: 3000, linkWait: 1001, producerWait: 400, socketRate: 5e6), Is.EqualTo(DataEncoding.Zstd));
        Assert.That(p.Check(DataEncoding.Zstd, now: 4000, linkWait: 1001, producerWait: 1000, socketRate: 5e6), Is.EqualTo(DataEncoding.Lz4));
    }

    [Test]
    public void Restart_drops_the_time_before_it()
    {
        var p = Policy(CodecChoice.Auto);
        p.Restart(10_000); // the handshake took 10 000 ticks; 600 of link wait in the next 1000 is link-bound
        Assert.That(p.Check(DataEncoding.Lz4, now: 11_000, linkWait: 600, producerWait: 0, socketRate: 5e6), Is.EqualTo(DataEncoding.Zstd));
    }
}
