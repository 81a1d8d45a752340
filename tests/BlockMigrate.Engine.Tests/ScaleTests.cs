using System.Security.Cryptography;
using BlockMigrate.Maps;
using BlockMigrate.Protocol;
using BlockMigrate.Receiver;
using BlockMigrate.TestSupport;
using BlockMigrate.Verify;
using Microsoft.Win32.SafeHandles;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// Cost follows the data, not the disk's size: a run of holes is one zero range on the wire however long,
/// `--verify` reads data and not holes (and still finds a difference hidden in a hole), a hostile zero
/// range cannot punch part of a block. Counted from the report's wire counters and bytes read, never timed.
/// </summary>
[CancelAfter(300_000)]
public class ScaleTests
{
    /// <summary>A sparse image of <paramref name="size"/> bytes with <paramref name="pieces"/> pieces of 256 KiB of random data, evenly spaced.</summary>
    private static long MakeSparseImage(string path, long size, int pieces)
    {
        using var f = File.Create(path);
        f.SetLength(size);
        var piece = new byte[256 << 10];
        for (var i = 0; i < pieces; i++)
        {
            RandomNumberGenerator.Fill(piece);
            f.Position = size / pieces * i + 12345 * 4096L % (size / pieces / 2);
            f.Write(piece);
        }
        return (long)pieces * piece.Length;
    }

    [Test]
    public async Task Holes_cost_one_zero_range_each_however_large_the_disk()
    {
        using var dir = new TempDir("engine");
        const long size = 64L << 30; // 64 GiB of which 4 MiB are data: 16 runs of holes
        const int pieces = 16;
        var data = MakeSparseImage(Path.Combine(dir.Path, "source.img"), size, pieces);
        using var source = SourceShim.Serve(dir.Path, "source.img");
        await using var receiver = await InProcessReceiver.StartAsync(dir["dst"]);

        var run = await MigrateRun.RunAsync(source, receiver.Address, keys: null, "--verify");

        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        var report = run.Report;
        Assert.That(report.GetProperty("verified").GetBoolean(), Is.True);
        Assert.That(report.GetProperty("bytes_of_data").GetInt64(), Is.EqualTo(data), "random data, no writer: every data byte once");
        Assert.That(report.GetProperty("bytes_zero").GetInt64(), Is.EqualTo(size - data), "every hole sent, as zero ranges");
        // random data goes raw: the wire holds the data, one frame head per MiB of it, the handshake, and one
        // zero range per run of holes (17 here). One zero frame per MiB of holes (as before) would be 65,520
        // frames of 48 bytes: 3 MiB. The bound does not depend on the disk's size.
        var overhead = report.GetProperty("bytes_on_wire").GetInt64() - data;
        Assert.That(overhead, Is.LessThan(16 << 10), $"wire overhead beyond the data: {overhead} bytes");
        using (var src = File.OpenHandle(source.Image))
        using (var dst = File.OpenHandle(receiver.Image("vda")))
            Assert.That(NonzeroDigest.Compute(dst, size).Hex, Is.EqualTo(NonzeroDigest.Compute(src, size).Hex), "the same content");
        Assert.That(new FileInfo(receiver.Image("vda")).Length, Is.EqualTo(size));
    }

    /// <summary>The receiver's storage, except that its first zero range of at least 64 KiB gets a non-zero byte in its middle.</summary>
    private sealed class DataInAHole : IReceiverStorage
    {
        private int _zeros;
        public long? PlantedAt { get; private set; }

        public SafeFileHandle Open(SafeFileHandle dir, string name, bool create) => PosixStorage.Instance.Open(dir, name, create);
        public void Write(SafeFileHandle file, ReadOnlySpan<byte> data, long offset, StoragePoint point) => PosixStorage.Instance.Write(file, data, offset, point);

        public void Zero(SafeFileHandle file, long offset, long length, StoragePoint point)
        {
            PosixStorage.Instance.Zero(file, offset, length, point);
            if (length >= 65536 && Interlocked.Increment(ref _zeros) == 1)
            {
                PlantedAt = offset + length / 2 / 4096 * 4096 + 100;
                PosixStorage.Instance.Write(file, [0x5a], PlantedAt.Value, StoragePoint.DataWrite);
            }
        }

        public void Truncate(SafeFileHandle file, long length, StoragePoint point) => PosixStorage.Instance.Truncate(file, length, point);
        public void Sync(SafeFileHandle file, StoragePoint point) => PosixStorage.Instance.Sync(file, point);
        public void Rename(string imageDir, string from, string to, StoragePoint point) => PosixStorage.Instance.Rename(imageDir, from, to, point);
    }

    [Test]
    public async Task Verify_finds_data_where_the_source_has_a_hole()
    {
        using var dir = new TempDir("engine");
        MakeSparseImage(Path.Combine(dir.Path, "source.img"), 4L << 30, 4);
        using var source = SourceShim.Serve(dir.Path, "source.img");
        var storage = new DataInAHole();
        await using var receiver = await InProcessReceiver.StartAsync(dir["dst"], storage: storage);

        var run = await MigrateRun.RunAsync(source, receiver.Address, keys: null, "--verify");

        Assert.That(storage.PlantedAt, Is.Not.Null, "a zero range was received");
        using (var img = File.OpenHandle(Path.Combine(dir.Path, "source.img")))
            Assert.That(Interop.SparseFile.NextData(img, storage.PlantedAt!.Value / 4096 * 4096, 4L << 30), Is.GreaterThan(storage.PlantedAt.Value),
                "the byte sits where the source has a hole");
        Assert.That(run.ExitCode, Is.EqualTo(5), run.ToString());
        Assert.That(run.Report.GetProperty("verified").GetBoolean(), Is.False);
    }

    [Test]
    public void Nonzero_digest_reads_data_not_holes_and_compares_contents()
    {
        using var dir = new TempDir("engine");
        const long size = 1L << 40; // a terabyte of holes
        string a = dir["a.img"], b = dir["b.img"];
        foreach (var p in new[] { a, b })
        {
            using var f = File.Create(p);
            f.SetLength(size);
        }
        var block = new byte[8192];
        RandomNumberGenerator.Fill(block);
        using (var f = File.OpenWrite(a)) { f.Position = 300L << 30; f.Write(block); }
        using (var f = File.OpenWrite(b)) { f.Position = 300L << 30; f.Write(block); }
        // b also has 1 MiB of written zeros where a has a hole: the same content
        using (var f = File.OpenWrite(b)) { f.Position = 700L << 30; f.Write(new byte[1 << 20]); }

        (string Hex, long Read) Digest(string p)
        {
            using var h = File.OpenHandle(p);
            return NonzeroDigest.Compute(h, size);
        }

        var da = Digest(a);
        var db = Digest(b);
        Assert.That(db.Hex, Is.EqualTo(da.Hex), "zeros and holes are the same content");
        Assert.That(da.Read, Is.LessThanOrEqualTo(1L << 20), "a reads its data, not its terabyte of holes");
        Assert.That(db.Read, Is.LessThanOrEqualTo(3L << 20));

        // one non-zero byte where a has a hole (b's data there is zeros elsewhere in the unit)
        using (var f = File.OpenWrite(b)) { f.Position = (700L << 30) + 5000; f.WriteByte(1); }
        Assert.That(Digest(b).Hex, Is.Not.EqualTo(da.Hex), "data in a hole of the other side is a difference");

        // the same data at another offset is a difference too
        using (var f = File.OpenWrite(b)) { f.Position = (700L << 30) + 5000; f.WriteByte(0); }
        Assert.That(Digest(b).Hex, Is.EqualTo(da.Hex));
        using (var f = File.OpenWrite(b))
        {
            f.Position = 300L << 30;
            f.Write(new byte[8192]);
            f.Position = (300L << 30) + 4096;
            f.Write(block);
        }
        Assert.That(Digest(b).Hex, Is.Not.EqualTo(da.Hex), "offsets are part of the digest");
    }

    [Test]
    public async Task Zero_range_ending_inside_a_block_is_refused_and_punches_nothing()
    {
        using var dir = new TempDir("engine");
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys: null);
        var data = Enumerable.Repeat((byte)0x5a, 65536).ToArray();
        await using (var source = await RawSource.ConnectAsync(receiver.Port))
        {
            Assert.That((await source.HelloAsync("vda")).Type, Is.EqualTo(FrameType.Welcome));
            await source.SendAsync(FrameType.Data, RawSource.DataPayload(65536, data));
            Assert.That((await source.Reader.ReadRequiredAsync("ack", CancellationToken.None)).Type, Is.EqualTo(FrameType.Ack));
            // a hole over the first block and the first 100 bytes of the one holding data
            var zero = new byte[DataHeader.Size];
            new DataHeader(0, DataEncoding.Zero, 0, 65536 + 100).Write(zero);
            await source.SendAsync(FrameType.Data, zero);
            Assert.That(await source.ErrorAsync(), Does.Contain("ends inside a block"));
        }
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(20)), Is.EqualTo(1));
        var image = await File.ReadAllBytesAsync(receiver.Image("vda"));
        Assert.That(image.AsSpan(65536, 65536).SequenceEqual(data), Is.True, "the data the receiver acknowledged is intact");
    }

    [Test]
    public async Task Zero_range_past_the_end_of_the_disk_is_refused()
    {
        using var dir = new TempDir("engine");
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys: null);
        await using (var source = await RawSource.ConnectAsync(receiver.Port))
        {
            Assert.That((await source.HelloAsync("vda")).Type, Is.EqualTo(FrameType.Welcome));
            var zero = new byte[DataHeader.Size];
            new DataHeader(0, DataEncoding.Zero, 0, 1ul << 40).Write(zero);
            await source.SendAsync(FrameType.Data, zero);
            Assert.That(await source.ErrorAsync(), Does.Contain("past the end"));
        }
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(20)), Is.EqualTo(1));
        Assert.That(new FileInfo(receiver.Image("vda")).Length, Is.EqualTo(1 << 20), "the image keeps its size");
    }

    /// <summary>The taken bits, read piece by piece into ranges, are the ranges of the whole bitmap.</summary>
    [Test]
    public void Ranges_appended_piece_by_piece_equal_the_whole_bitmap_s([Random(0, 1_000_000, 50)] int seed)
    {
        var rnd = new Random(seed);
        var words = new ulong[64];
        for (var i = 0; i < words.Length; i++)
            words[i] = rnd.Next(4) switch { 0 => 0, 1 => ulong.MaxValue, _ => (ulong)rnd.NextInt64() };
        var whole = BlockRange.FromBits(words, 3);
        var pieces = new List<BlockRange>();
        for (var w = 0; w < words.Length;)
        {
            var n = Math.Min(rnd.Next(1, 9), words.Length - w);
            BlockRange.AppendBits(pieces, words.AsSpan(w, n), 3 + (ulong)w);
            w += n;
        }
        Assert.That(pieces, Is.EqualTo(whole));
    }

    /// <summary>The blocks out at the source, kept in chunks: the same bits as a flat bitmap, and memory only for chunks with some.</summary>
    [Test]
    public void Outstanding_bits_match_a_flat_bitmap_and_keep_memory_for_partial_chunks_only([Random(0, 1_000_000, 20)] int seed)
    {
        var rnd = new Random(seed);
        const ulong words = OutstandingBits.ChunkWords * 5 + 77;
        var bits = new OutstandingBits(words);
        var flat = new ulong[words];
        var all = Enumerable.Repeat(ulong.MaxValue, (int)words).ToArray();
        bits.Or(0, all); // a bulk copy takes every block
        all.CopyTo(flat, 0);
        Assert.That(bits.OwnChunks, Is.LessThanOrEqualTo(1), "full chunks share one array (the short last one may not)");
        for (var step = 0; step < 200; step++)
        {
            if (rnd.Next(3) == 0)
            {
                var w = (ulong)rnd.NextInt64((long)words);
                var piece = Enumerable.Range(0, rnd.Next(1, 300)).Select(_ => (ulong)rnd.NextInt64() & (ulong)rnd.NextInt64()).ToArray();
                piece = piece[..(int)Math.Min((ulong)piece.Length, words - w)];
                bits.Or(w, piece);
                for (var i = 0; i < piece.Length; i++) flat[w + (ulong)i] |= piece[i];
            }
            else
            {
                var first = (ulong)rnd.NextInt64((long)words * 64);
                var count = (ulong)rnd.NextInt64(rnd.Next(2) == 0 ? 5000 : 2_000_000);
                bits.Clear(first, count);
                for (var b = first; b < Math.Min(first + count, words * 64); b++) flat[b / 64] &= ~(1ul << (int)(b % 64));
            }
            Assert.That(bits.Count(), Is.EqualTo((ulong)flat.Sum(x => (long)System.Numerics.BitOperations.PopCount(x))));
        }
        var copy = new ulong[words];
        Assert.That(bits.CopyTo(0, copy), Is.EqualTo(flat.Any(x => x != 0)));
        Assert.That(copy, Is.EqualTo(flat));
        var viaChunks = new ulong[words];
        foreach (var (firstWord, chunk) in bits.Chunks()) chunk.Span.CopyTo(viaChunks.AsSpan((int)firstWord));
        Assert.That(viaChunks, Is.EqualTo(flat));
        bits.Clear(0, words * 64);
        Assert.That(bits.Count(), Is.Zero);
        Assert.That(bits.OwnChunks, Is.Zero, "no memory once every block is acknowledged");
    }

    /// <summary>The gate's windowed reads and marks agree with bit-by-bit ones across window boundaries.</summary>
    [Test]
    public void Gate_marks_and_peeks_window_by_window([Random(0, 1_000_000, 5)] int seed)
    {
        using var dir = new TempDir("engine");
        var rnd = new Random(seed);
        var blocks = 3_000_000ul; // 46,875 words: several windows of 8,192
        using var map = DirtyMap.Create(dir["gate.map"], blocks * 4096, 4096);
        using var gate = new GateLink(DirtyMap.Open(dir["gate.map"]));
        var ranges = new List<BlockRange>();
        var expected = new bool[blocks];
        for (ulong b = (ulong)rnd.Next(1000); b < blocks;)
        {
            var len = (ulong)(rnd.Next(3) == 0 ? rnd.Next(1, 1_200_000) : rnd.Next(1, 200));
            var last = Math.Min(blocks - 1, b + len - 1);
            ranges.Add(new BlockRange(b, last));
            for (var x = b; x <= last; x++) expected[x] = true;
            b = last + 2 + (ulong)rnd.Next(100_000);
        }
        gate.MarkStale(ranges);
        Assert.That(map.Info().GatedBlocks, Is.EqualTo((ulong)expected.Count(x => x)));
        var first = (ulong)rnd.Next(100);
        var count = blocks - first - (ulong)rnd.Next(100);
        var runs = gate.StillGated(first, count);
        var got = new bool[blocks];
        foreach (var (f, n) in runs)
            for (var x = f; x < f + n; x++) got[x] = true;
        for (var x = 0ul; x < blocks; x++)
            if (got[x] != (expected[x] && x >= first && x < first + count))
                Assert.Fail($"block {x}: gated {got[x]}, expected {expected[x] && x >= first && x < first + count}");
        Assert.That(runs.Zip(runs.Skip(1)).All(p => p.First.First + p.First.Count < p.Second.First), "runs are maximal and ascending");
    }
}
