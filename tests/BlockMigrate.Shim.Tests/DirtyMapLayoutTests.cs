using BlockMigrate.Interop;
using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Shim.Tests;

/// <summary>The C# view of the map agrees with the C library, and the library's map API keeps its rules.</summary>
public class DirtyMapLayoutTests
{
    [Test]
    public void Csharp_mirror_of_bm_info_matches_the_library() =>
        Assert.That(LayoutProbe.Mismatches(), Is.Empty);

    [Test]
    public void Created_map_reports_its_geometry_and_is_clean()
    {
        using var dir = new TempDir("map");
        using var map = DirtyMap.Create(dir["a.map"], 10 * 1024 * 1024 + 12 * 1024, 64 * 1024);
        var info = map.Info();
        Assert.Multiple(() =>
        {
            Assert.That(info.BlockSize, Is.EqualTo(64 * 1024));
            Assert.That(info.Blocks, Is.EqualTo(161), "160 full blocks and one partial");
            Assert.That(info.ImageSize, Is.EqualTo(10 * 1024 * 1024 + 12 * 1024));
            Assert.That(info.DirtyBlocks, Is.Zero);
            Assert.That(map.DirtyRanges(), Is.Empty);
        });
    }

    [Test]
    public void Take_clears_exactly_what_it_returns_and_mark_gives_it_back()
    {
        using var dir = new TempDir("map");
        using var map = DirtyMap.Create(dir["a.map"], 1L << 30, 64 * 1024);
        map.MarkBlocks(5, 3);
        map.MarkBlocks(63, 2);
        map.MarkBytes(100L * 65536 - 1, 2);
        Assert.That(map.DirtyRanges(), Is.EqualTo(new[] { new BlockRange(5, 7), new BlockRange(63, 64), new BlockRange(99, 100) }));

        var taken = map.TakeAll(out var count);
        Assert.That(count, Is.EqualTo(7));
        Assert.That(map.DirtyCount(), Is.Zero);
        Assert.That(BlockRange.FromBits(taken), Is.EqualTo(new[] { new BlockRange(5, 7), new BlockRange(63, 64), new BlockRange(99, 100) }));

        map.MarkWords(0, taken);
        Assert.That(map.DirtyCount(), Is.EqualTo(7));
    }

    [Test]
    public void Reopen_with_other_geometry_is_refused_with_one_line()
    {
        using var dir = new TempDir("map");
        DirtyMap.Create(dir["a.map"], 1 << 20, 64 * 1024).Dispose();
        var e = Assert.Throws<DirtyMapException>(() => DirtyMap.OpenOrCreate(dir["a.map"], 2 << 20, 64 * 1024));
        Assert.That(e!.Message, Does.Contain("a.map").And.Not.Contain("\n"));
        using var again = DirtyMap.OpenOrCreate(dir["a.map"], 1 << 20, 64 * 1024);
        Assert.That(again.Blocks, Is.EqualTo(16));
    }

    [Test]
    public void Corrupt_or_missing_map_is_refused()
    {
        using var dir = new TempDir("map");
        File.WriteAllBytes(dir["junk.map"], new byte[8192]);
        Assert.Throws<DirtyMapException>(() => DirtyMap.Open(dir["junk.map"]));
        Assert.Throws<DirtyMapException>(() => DirtyMap.Open(dir["absent.map"]));
    }

    [TestCase(4096u, true)]
    [TestCase(65536u, true)]
    [TestCase(1048576u, true)]
    [TestCase(2048u, false)]
    [TestCase(3000u, false)]
    [TestCase(2097152u, false)]
    public void Block_size_must_be_a_power_of_two_from_4K_to_1M(uint size, bool valid) =>
        Assert.That(DirtyMap.IsValidBlockSize(size), Is.EqualTo(valid));

    [Test]
    public void Ranges_are_found_across_word_boundaries()
    {
        ulong[] words = [0x8000_0000_0000_0001ul, ulong.MaxValue, 0x1ul, 0, 0x6ul];
        Assert.That(BlockRange.FromBits(words), Is.EqualTo(new[]
        {
            new BlockRange(0, 0), new BlockRange(63, 128), new BlockRange(257, 258),
        }));
        Assert.That(BlockRange.FromBits(words, firstWord: 2)[0], Is.EqualTo(new BlockRange(128, 128)));
    }
}
