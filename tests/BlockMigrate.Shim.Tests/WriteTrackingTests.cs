using BlockMigrate.Maps;

namespace BlockMigrate.Shim.Tests;

/// <summary>Writes through real NBD clients dirty exactly the blocks they touch; nothing else dirties.</summary>
[CancelAfter(120_000)]
public class WriteTrackingTests
{
    private const long Block = 64 * 1024;
    // 10 MiB plus a partial last block of 12 KiB: 161 blocks
    private const long ImageSize = 160 * Block + 12 * 1024;

    private ShimHarness _shim = null!;

    [SetUp]
    public void Start() => _shim = ShimHarness.Start(ImageSize);

    [TearDown]
    public void Stop() => _shim.Dispose();

    private static BlockRange[] R(params (ulong, ulong)[] ranges) => ranges.Select(r => new BlockRange(r.Item1, r.Item2)).ToArray();

    [Test]
    public async Task Aligned_write_dirties_its_block_only()
    {
        await _shim.QemuIoAsync($"write -P 0xab {3 * Block} {Block}");
        Assert.That(_shim.Dirty(), Is.EqualTo(R((3, 3))));
    }

    [Test]
    public async Task Unaligned_write_across_a_boundary_dirties_both_blocks()
    {
        await _shim.QemuIoAsync($"write -P 0xab {Block - 1} 2");
        Assert.That(_shim.Dirty(), Is.EqualTo(R((0, 1))));
    }

    [Test]
    public async Task Small_unaligned_write_inside_a_block_dirties_that_block()
    {
        await _shim.QemuIoAsync($"write -P 0x11 {7 * Block + 513} 1000");
        Assert.That(_shim.Dirty(), Is.EqualTo(R((7, 7))));
    }

    [Test]
    public async Task Write_spanning_many_blocks_dirties_the_run()
    {
        await _shim.QemuIoAsync($"write -P 0x22 {10 * Block + 4096} {5 * Block}");
        Assert.That(_shim.Dirty(), Is.EqualTo(R((10, 15))));
    }

    [Test]
    public async Task Write_to_the_last_partial_block_dirties_it()
    {
        await _shim.QemuIoAsync($"write -P 0x33 {ImageSize - 4096} 4096");
        Assert.That(_shim.Dirty(), Is.EqualTo(R((160, 160))));
    }

    [Test]
    public async Task Reads_and_flushes_dirty_nothing()
    {
        await _shim.QemuIoAsync($"read 0 {ImageSize}", "flush");
        await _shim.NbdshAsync($"h.pread(65536, {20 * Block}); h.flush()");
        Assert.That(_shim.Dirty(), Is.Empty);
        Assert.That(_shim.Map.Info().Writes, Is.Zero);
    }

    [Test]
    public async Task Zero_and_trim_dirty_their_blocks()
    {
        await _shim.NbdshAsync($"h.zero({2 * Block}, {20 * Block}); h.trim({Block}, {40 * Block})");
        Assert.That(_shim.Dirty(), Is.EqualTo(R((20, 21), (40, 40))));
        await _shim.QemuIoAsync($"write -z {50 * Block} {Block}", $"discard {60 * Block} 4096");
        Assert.That(_shim.Dirty(), Is.EqualTo(R((20, 21), (40, 40), (50, 50), (60, 60))));
    }

    [Test]
    public async Task Counters_follow_the_writes()
    {
        await _shim.QemuIoAsync($"write -P 0x44 0 {Block}", $"write -P 0x45 {Block} 4096");
        var info = _shim.Map.Info();
        Assert.That(info.Writes, Is.EqualTo(2));
        Assert.That(info.BytesWritten, Is.EqualTo(Block + 4096));
        Assert.That(info.WritesInFlight, Is.Zero);
    }

    [Test]
    public async Task Data_written_through_the_shim_reaches_the_image()
    {
        await _shim.QemuIoAsync($"write -P 0x5a {5 * Block + 100} 300");
        var bytes = new byte[300];
        using (var f = File.OpenRead(_shim.Image))
        {
            f.Position = 5 * Block + 100;
            f.ReadExactly(bytes);
        }
        Assert.That(bytes, Is.All.EqualTo(0x5a));
    }

    [Test]
    public async Task Bits_taken_by_the_orchestrator_come_back_on_the_next_write()
    {
        await _shim.QemuIoAsync($"write -P 1 0 {Block}");
        _shim.Map.TakeAll(out var n);
        Assert.That(n, Is.EqualTo(1));
        Assert.That(_shim.Dirty(), Is.Empty);
        await _shim.QemuIoAsync($"write -P 2 0 4096");
        Assert.That(_shim.Dirty(), Is.EqualTo(R((0, 0))));
    }

    [Test]
    public async Task Smaller_block_size_tracks_4K_writes_exactly()
    {
        using var shim = ShimHarness.Start(1 << 20, blockSize: "4K");
        await shim.QemuIoAsync("write -P 7 8192 4096", "write -P 8 12287 2");
        Assert.That(shim.Map.BlockSize, Is.EqualTo(4096));
        Assert.That(shim.Dirty(), Is.EqualTo(R((2, 3))));
    }
}
