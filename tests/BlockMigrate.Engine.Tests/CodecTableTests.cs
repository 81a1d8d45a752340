using BlockMigrate.Protocol;

namespace BlockMigrate.Engine.Tests;

/// <summary>The codec table (Protocol/BlockCodec.cs) is the one list: the Welcome, --codec and the report follow it.</summary>
public class CodecTableTests
{
    [Test]
    public void Every_row_has_its_own_wire_id_and_name_and_round_trips()
    {
        Assert.That(BlockCodec.All.Select(c => c.Encoding), Is.Unique);
        Assert.That(BlockCodec.All.Select(c => c.Name), Is.Unique);
        Assert.That(BlockCodec.All.Select(c => c.Encoding), Has.None.EqualTo(DataEncoding.Raw).And.None.EqualTo(DataEncoding.Zero));
        var text = System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("a log line that compresses well\n", 4000)));
        foreach (var c in BlockCodec.All)
        {
            Assert.That(BlockCodec.Of(c.Encoding), Is.SameAs(c));
            Assert.That(BlockCodec.Named(c.Name), Is.SameAs(c));
            Assert.That(c.Name, Is.EqualTo(c.Name.ToLowerInvariant()));
            Assert.That(c.Bound(text.Length), Is.LessThanOrEqualTo(BlockCodec.ScratchSize(text.Length)));
            var (encoding, body) = BlockCodec.Encode(text, new byte[BlockCodec.ScratchSize(text.Length)], c.Encoding);
            Assert.That(encoding, Is.EqualTo(c.Encoding), c.Name);
            var back = new byte[text.Length];
            BlockCodec.Decode(encoding, body.Span, back);
            Assert.That(back, Is.EqualTo(text), c.Name);
        }
    }

    [Test]
    public void The_welcome_lists_the_negotiated_rows_and_lz4_needs_no_asking()
    {
        Assert.That(BlockCodec.Advertised, Is.EqualTo(new[] { "zstd" }));
        Assert.That(BlockCodec.Zstd.Name, Is.EqualTo(WelcomeMessage.Zstd));
        Assert.That(BlockCodec.Decodable(null), Is.EqualTo(new[] { BlockCodec.Lz4 }));
        Assert.That(BlockCodec.Decodable(["zstd", "brotli"]), Is.EqualTo(new[] { BlockCodec.Lz4, BlockCodec.Zstd }));
    }

    [Test]
    public void Codec_choices_are_auto_and_the_table()
    {
        Assert.That(CodecChoice.Names, Is.EqualTo(new[] { "auto", "lz4", "zstd" }));
        Assert.That(CodecChoice.NamesText, Is.EqualTo("auto, lz4 or zstd"));
        Assert.That(CodecChoice.Parse("auto"), Is.EqualTo(CodecChoice.Auto));
        Assert.That(CodecChoice.Parse("zstd")?.Fixed, Is.SameAs(BlockCodec.Zstd));
        Assert.That(CodecChoice.Parse("brotli"), Is.Null);
        Assert.That(new MigrationOptions { Disks = [], Host = "h" }.Codec.IsAuto, Is.True, "the default");
    }
}
