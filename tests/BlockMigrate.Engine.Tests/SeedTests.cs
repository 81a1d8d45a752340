using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using BlockMigrate.Maps;
using BlockMigrate.Protocol;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// Seeding from images at the destination (docs/engine.md, "Seeding"): blocks whose content the
/// receiver finds in its seeds, anywhere, are written there from the seed, re-hashed as read; the rest
/// are sent. A crafted collision, a seed changed under us or a source killed mid-exchange never leaves
/// a wrong block; a receiver without seeds sees no hash frame.
/// </summary>
[CancelAfter(150_000)]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class SeedTests
{
    private const long Size = 16L << 20;
    private const int Block = 4096;
    private const int SeedBlocks = 2048; // 8 MiB of random content, in the seed and on the disk

    /// <summary>
    /// A source disk of <see cref="Size"/> bytes in 4 KiB blocks: <paramref name="shared"/> at 1 MiB,
    /// <paramref name="unique"/> (content no seed has) at 12 MiB, holes elsewhere.
    /// </summary>
    private static SourceShim Source(TempDir dir, byte[] shared, byte[] unique) => Source(dir.Path, shared, unique);

    private static SourceShim Source(string dir, byte[] shared, byte[] unique)
    {
        var source = SourceShim.Start(dir, Size, randomBytes: 0, blockSize: "4K");
        using var f = new FileStream(source.Image, FileMode.Open, FileAccess.Write);
        f.SetLength(0);
        f.SetLength(Size);
        f.Position = 1 << 20;
        f.Write(shared);
        f.Position = 12L << 20;
        f.Write(unique);
        return source;
    }

    /// <summary>A seed: three blocks of other content, then <paramref name="shared"/> (so at an offset the disk does not have it), then more.</summary>
    private static string Seed(TempDir dir, byte[] shared)
    {
        var path = Path.Combine(dir.Path, "template.img");
        using var f = File.Create(path);
        f.Write(RandomNumberGenerator.GetBytes(3 * Block));
        f.Write(shared);
        f.Write(RandomNumberGenerator.GetBytes(5 * Block + 100));
        return path;
    }

    private static string Sha(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(f));
    }

    private static long Field(MigrateRun run, string name) => run.Report.GetProperty(name).GetInt64();

    [Test]
    public async Task Content_found_at_other_offsets_in_a_seed_is_written_from_it_not_sent()
    {
        using var dir = new TempDir("engine");
        var shared = RandomNumberGenerator.GetBytes(SeedBlocks * Block);
        using var source = Source(dir, shared, RandomNumberGenerator.GetBytes(256 * Block));
        var seed = Seed(dir, shared);
        await using var receiver = await InProcessReceiver.StartAsync(dir["dst"], seeds: [seed]);
        var run = await MigrateRun.RunAsync(source, receiver.Address, null, "--verify");

        Assert.That(run.ExitCode, Is.Zero, run + receiver.Log);
        Assert.That(run.Report.GetProperty("verified").GetBoolean(), Is.True);
        Assert.That(Sha(receiver.Image("vda")), Is.EqualTo(Sha(source.Image)));
        Assert.That(Field(run, "blocks_from_seeds"), Is.EqualTo(SeedBlocks), run.Stdout);
        Assert.That(Field(run, "blocks_sent"), Is.EqualTo(256), "only the blocks no seed has are sent");
        Assert.That(Field(run, "bytes_of_data"), Is.EqualTo(256 * Block));
        var exchange = Field(run, "seed_exchange_bytes");
        Assert.That(exchange, Is.GreaterThan((SeedBlocks + 256) * BlockHash.Size).And.LessThan(Size / 100), "the hashes: well under 1 % of the disk");
        Assert.That(run.Stderr, Does.Contain($"seeds: {SeedBlocks} of {SeedBlocks + 256} blocks hashed were written at the destination"));
    }

    [Test]
    public async Task Blocks_already_received_in_this_migration_are_copied_not_sent_again()
    {
        using var dir = new TempDir("engine");
        // two disks with the same content, which no seed has: the second disk's blocks are found in the first's image
        var unique = RandomNumberGenerator.GetBytes(512 * Block);
        Directory.CreateDirectory(dir["a"]);
        Directory.CreateDirectory(dir["b"]);
        using var a = Source(dir["a"], RandomNumberGenerator.GetBytes(Block), unique);
        using var b = Source(dir["b"], RandomNumberGenerator.GetBytes(Block), unique);
        var seed = Seed(dir, RandomNumberGenerator.GetBytes(16 * Block)); // unrelated: only so that the receiver has seeds
        await using var receiver = await InProcessReceiver.StartAsync(dir["dst"], seeds: [seed]);
        var run = await MigrateRun.RunArgsAsync("--disk", a.DiskArg("vda"), "--disk", b.DiskArg("vdb"), "--to", receiver.Address,
            "--plaintext", "--json", "--timeout", "120", "--verify");

        Assert.That(run.ExitCode, Is.Zero, run + receiver.Log);
        Assert.That(run.Report.GetProperty("verified").GetBoolean(), Is.True);
        Assert.That(Sha(receiver.Image("vdb")), Is.EqualTo(Sha(b.Image)));
        Assert.That(Field(run, "blocks_from_seeds"), Is.EqualTo(512), "vdb's copy of the content came from vda's image at the destination");
        Assert.That(Field(run, "blocks_sent"), Is.EqualTo(512 + 2), "vda's copy once, and each disk's own first block");
    }

    /// <summary>CRC-32 (IEEE), the weak hash a collision is crafted under.</summary>
    private static uint Crc32(ReadOnlySpan<byte> data)
    {
        var crc = ~0u;
        foreach (var b in data)
        {
            crc ^= b;
            for (var k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (uint)-(int)(crc & 1));
        }
        return ~crc;
    }

    /// <summary>
    /// A block <c>b</c> ≠ <paramref name="a"/> with CRC-32(b) = CRC-32(a): CRC is affine, so a difference
    /// d with CRC(d) = CRC(0) keeps it; 40 random vectors always have a subset whose CRC-32 images
    /// (32 bits) XOR to CRC(0)·(parity), found by Gaussian elimination.
    /// </summary>
    private static byte[] Collide(byte[] a)
    {
        var zero = Crc32(new byte[a.Length]);
        var vectors = Enumerable.Range(0, 40).Select(_ => RandomNumberGenerator.GetBytes(a.Length)).ToArray();
        // linear part L(v) = crc(v) ^ crc(0); find a non-empty subset with XOR of L = 0
        var rows = vectors.Select((v, i) => (L: Crc32(v) ^ zero, Mask: 1ul << i)).ToList();
        var pivots = new List<(uint L, ulong Mask)>();
        ulong found = 0;
        foreach (var r in rows)
        {
            var (l, m) = r;
            foreach (var p in pivots)
                if ((l ^ p.L) < l) (l, m) = (l ^ p.L, m ^ p.Mask);
            if (l == 0)
            {
                found = m;
                break;
            }
            pivots.Add((l, m));
            pivots.Sort((x, y) => y.L.CompareTo(x.L));
        }
        Assert.That(found, Is.Not.Zero);
        var b = (byte[])a.Clone();
        for (var i = 0; i < vectors.Length; i++)
            if ((found >> i & 1) != 0)
                for (var j = 0; j < b.Length; j++) b[j] ^= vectors[i][j];
        return b;
    }

    [Test]
    public async Task A_block_crafted_to_collide_under_a_weak_hash_with_a_seed_block_arrives_intact()
    {
        using var dir = new TempDir("engine");
        var inSeed = RandomNumberGenerator.GetBytes(Block);
        var onDisk = Collide(inSeed);
        Assert.That(Crc32(onDisk), Is.EqualTo(Crc32(inSeed)), "the two blocks collide under CRC-32");
        Assert.That(onDisk, Is.Not.EqualTo(inSeed));
        var shared = RandomNumberGenerator.GetBytes(SeedBlocks * Block);
        // the seed holds the shared blocks and the one block; the disk the shared blocks and its twin
        using var source = Source(dir, shared, onDisk);
        var seed = Seed(dir, [.. shared, .. inSeed]);
        await using var receiver = await InProcessReceiver.StartAsync(dir["dst"], seeds: [seed]);
        var run = await MigrateRun.RunAsync(source, receiver.Address, null, "--verify");

        Assert.That(run.ExitCode, Is.Zero, run + receiver.Log);
        Assert.That(run.Report.GetProperty("verified").GetBoolean(), Is.True);
        var got = new byte[Block];
        using (var image = File.OpenRead(receiver.Image("vda")))
        {
            image.Position = 12L << 20;
            image.ReadExactly(got);
        }
        Assert.That(got, Is.EqualTo(onDisk), "the disk's block, not the seed's twin");
        Assert.That(Field(run, "blocks_from_seeds"), Is.EqualTo(SeedBlocks));
        Assert.That(Field(run, "blocks_sent"), Is.EqualTo(1));
    }

    [Test]
    public async Task A_seed_changed_during_the_migration_costs_its_blocks_on_the_wire_never_a_wrong_block()
    {
        using var dir = new TempDir("engine");
        var shared = RandomNumberGenerator.GetBytes(SeedBlocks * Block);
        using var source = Source(dir, shared, RandomNumberGenerator.GetBytes(16 * Block));
        var seed = Seed(dir, shared);
        var changed = 0;
        // once indexed, the seed's second half is overwritten in place (another process writing a shared file)
        await using var receiver = await InProcessReceiver.StartAsync(dir["dst"], seeds: [seed], seedsIndexed: () =>
        {
            using var f = new FileStream(seed, FileMode.Open, FileAccess.Write);
            f.Position = 3 * Block + SeedBlocks / 2 * Block;
            f.Write(RandomNumberGenerator.GetBytes(SeedBlocks / 2 * Block));
            f.Flush(true);
            Interlocked.Increment(ref changed);
        });
        var run = await MigrateRun.RunAsync(source, receiver.Address, null, "--verify");

        Assert.That(run.ExitCode, Is.Zero, run + receiver.Log);
        Assert.That(changed, Is.EqualTo(1));
        Assert.That(run.Report.GetProperty("verified").GetBoolean(), Is.True);
        Assert.That(Sha(receiver.Image("vda")), Is.EqualTo(Sha(source.Image)), "byte-identical");
        Assert.That(Field(run, "blocks_from_seeds"), Is.EqualTo(SeedBlocks / 2), "the unchanged half came from the seed");
        Assert.That(Field(run, "blocks_sent"), Is.EqualTo(SeedBlocks / 2 + 16), "the changed half was sent");
        await receiver.ExitCodeAsync(TimeSpan.FromSeconds(30));
        Assert.That(receiver.Log, Does.Contain($"{SeedBlocks / 2} had changed since they were indexed"));
    }

    [Test]
    public async Task Killing_the_source_in_the_middle_of_the_hash_exchange_resumes_to_an_identical_image()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        var shared = RandomNumberGenerator.GetBytes(SeedBlocks * Block);
        using var source = Source(dir, shared, RandomNumberGenerator.GetBytes(64 * Block));
        var hash = Sha(source.Image);
        var seed = Seed(dir, shared);
        var indexed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using (var receiver = await InProcessReceiver.StartAsync(dir["dst"], keys: keys, seeds: [seed], seedsIndexed: () =>
                     {
                         // the first hash frame is in: hold its answer while the source is killed
                         indexed.TrySetResult();
                         Thread.Sleep(3000);
                     }))
        {
            using var migrate = Process.Start(new ProcessStartInfo("dotnet")
            {
                ArgumentList = { Repo.CliDll, "migrate", "--disk", source.DiskArg(), "--to", receiver.Address, "--json", "--timeout", "120",
                    "--key", keys.SourceKey, "--peer-fingerprint", keys.ReceiverFingerprint },
                RedirectStandardOutput = true, RedirectStandardError = true,
            })!;
            await indexed.Task.WaitAsync(TimeSpan.FromSeconds(60));
            migrate.Kill(entireProcessTree: true);
            await migrate.WaitForExitAsync();
            Assert.That(await receiver.ExitCodeAsync(TimeSpan.FromSeconds(30)), Is.EqualTo(1), "nothing committed");
        }
        await using (var receiver = await InProcessReceiver.StartAsync(dir["dst"], keys: keys, seeds: [seed]))
        {
            var run = await MigrateRun.RunAsync(source, receiver.Address, keys, "--verify");
            Assert.That(run.ExitCode, Is.Zero, run + receiver.Log);
            Assert.That(run.Report.GetProperty("resumed").GetBoolean(), Is.True, "the killed run's lineage is resumed");
            Assert.That(run.Report.GetProperty("verified").GetBoolean(), Is.True);
            Assert.That(Field(run, "blocks_from_seeds"), Is.EqualTo(SeedBlocks), "the hashes are exchanged again for what was not acknowledged");
            Assert.That(Sha(receiver.Image("vda")), Is.EqualTo(hash));
        }
    }

    [Test]
    public async Task Without_seeds_no_hash_frame_is_sent()
    {
        using var dir = new TempDir("engine");
        var shared = RandomNumberGenerator.GetBytes(SeedBlocks * Block);
        using var source = Source(dir, shared, RandomNumberGenerator.GetBytes(16 * Block));
        // a receiver without seeds sends no seed key and refuses a seed-hashes frame (MalformedPeer cases):
        // a committed migration proves none crossed
        await using var receiver = await InProcessReceiver.StartAsync(dir["dst"]);
        var run = await MigrateRun.RunAsync(source, receiver.Address, null, "--verify");

        Assert.That(run.ExitCode, Is.Zero, run + receiver.Log);
        Assert.That(Field(run, "seed_exchange_bytes"), Is.Zero);
        Assert.That(Field(run, "blocks_from_seeds"), Is.Zero);
        Assert.That(Field(run, "blocks_sent"), Is.EqualTo(SeedBlocks + 16));
        Assert.That(run.Stderr, Does.Not.Contain("seed"));
    }

    // ---- a receiver sending what no receiver should -------------------------------------------------

    public static IEnumerable<TestCaseData> BadAnswers()
    {
        yield return new TestCaseData("more", "which asked about").SetName("Seed_answer_claiming_more_blocks_than_asked_fails_the_source");
        yield return new TestCaseData("unasked", "none awaits an answer").SetName("Seed_answer_to_no_hash_frame_fails_the_source");
        yield return new TestCaseData("wrong-seq", "where frame").SetName("Seed_answer_naming_another_frame_fails_the_source");
        yield return new TestCaseData("ack-only", "without answering it").SetName("Seed_hash_frame_acknowledged_unanswered_fails_the_source");
    }

    [TestCaseSource(nameof(BadAnswers))]
    public async Task Bad_seed_answer(string how, string error)
    {
        using var dir = new TempDir("engine");
        using var source = Source(dir, RandomNumberGenerator.GetBytes(64 * Block), RandomNumberGenerator.GetBytes(Block));
        var hash = Sha(source.Image);
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var fake = Task.Run(async () =>
        {
            using var c = await listener.AcceptTcpClientAsync();
            var s = c.GetStream();
            await s.ReadExactlyAsync(new byte[8]);
            await s.WriteAsync("Y"u8.ToArray());
            var reader = new FrameReader(s);
            var writer = new FrameWriter(s);
            using (var helloFrame = await reader.ReadRequiredAsync("hello", CancellationToken.None))
            {
                var hello = ProtocolJson.Decode(helloFrame, FrameType.Hello, ProtocolJson.Default.HelloMessage);
                var welcome = new WelcomeMessage(hello.Disks.Select(d => new DiskAnswer(d.Name, false)).ToList(), SeedKey: new string('7', 64));
                await writer.WriteAsync(FrameType.Welcome, ProtocolJson.Encode(welcome, ProtocolJson.Default.WelcomeMessage));
            }
            try
            {
                var data = 0;
                while (await reader.ReadAsync(CancellationToken.None) is { } f)
                    using (f)
                    {
                        if (f.Type == FrameType.Data)
                        {
                            if (how == "unasked" && ++data == 1) // the first round-trip probe: no hash frame exists yet
                                await writer.WriteAsync(FrameType.SeedAnswer, new SeedAnswer(f.Sequence, 1, [1]).Encode());
                            await writer.WriteAsync(FrameType.Ack, new AckMessage(f.Sequence).Encode());
                        }
                        else if (f.Type == FrameType.SeedHashes)
                        {
                            var n = SeedHashes.Decode(f.Span).Count;
                            var answer = how switch
                            {
                                "more" => new SeedAnswer(f.Sequence, n + 8, SeedAnswer.Bitmap(Enumerable.Repeat(true, n + 8).ToList())),
                                "wrong-seq" => new SeedAnswer(f.Sequence - 1, n, SeedAnswer.Bitmap(Enumerable.Repeat(true, n).ToList())),
                                _ => null,
                            };
                            if (answer != null) await writer.WriteAsync(FrameType.SeedAnswer, answer.Encode());
                            await writer.WriteAsync(FrameType.Ack, new AckMessage(f.Sequence).Encode());
                        }
                    }
            }
            catch (IOException) { }
            catch (ProtocolException) { }
        });
        try
        {
            var run = await MigrateRun.RunAsync(source, $"127.0.0.1:{port}", null);
            Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
            Assert.That(run.Error, Does.Contain(error));
            MalformedPeerTests.AssertNoCrash(run.Stderr);
            Assert.That(Sha(source.Image), Is.EqualTo(hash));
        }
        finally
        {
            listener.Stop();
            await fake.WaitAsync(TimeSpan.FromSeconds(30));
        }
    }

    private static byte[] HashesPayload(ushort disk, (ulong First, ulong Count)[] ranges, int hashes)
    {
        var p = new byte[SeedHashes.HeadSize + 16 * ranges.Length + BlockHash.Size * hashes];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(p, disk);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(4), (uint)ranges.Length);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(p.AsSpan(8), (uint)ranges.Sum(r => (long)r.Count));
        for (var i = 0; i < ranges.Length; i++)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(p.AsSpan(SeedHashes.HeadSize + 16 * i), ranges[i].First);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(p.AsSpan(SeedHashes.HeadSize + 8 + 16 * i), ranges[i].Count);
        }
        return p;
    }

    public static IEnumerable<TestCaseData> BadHashFrames()
    {
        // the disk is 1 MiB in blocks of 64 KiB: 16 blocks
        yield return new TestCaseData(true, new[] { HashesPayload(0, [(0, 2)], 1) }, "length does not match").SetName("Seed_hashes_with_fewer_hashes_than_blocks_are_refused");
        yield return new TestCaseData(true, new[] { HashesPayload(0, [(0, 1), (16, 1)], 2) }, "past its last whole block").SetName("Seed_hashes_past_the_end_of_the_disk_are_refused");
        yield return new TestCaseData(true, new[] { HashesPayload(3, [(0, 1)], 1) }, "only 1 were offered").SetName("Seed_hashes_for_a_disk_not_offered_are_refused");
        yield return new TestCaseData(true, new[] { HashesPayload(0, [(4, 4)], 4), HashesPayload(0, [(2, 1)], 1) }, "overlapping an earlier frame").SetName("Seed_hashes_repeating_blocks_are_refused");
        yield return new TestCaseData(true, new[] { HashesPayload(0, [(5, 1), (2, 1)], 2) }, "out of order or overlapping").SetName("Seed_hashes_with_descending_ranges_are_refused");
        yield return new TestCaseData(false, new[] { HashesPayload(0, [(0, 1)], 1) }, "offered no seeds").SetName("Seed_hashes_to_a_receiver_without_seeds_are_refused");
    }

    [TestCaseSource(nameof(BadHashFrames))]
    public async Task Bad_seed_hashes(bool withSeed, byte[][] frames, string error)
    {
        using var dir = new TempDir("engine");
        var seed = Path.Combine(dir.Path, "seed.img");
        File.WriteAllBytes(seed, RandomNumberGenerator.GetBytes(1 << 20));
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys: null, withSeed ? ["--seed", seed] : []);
        await using (var source = await RawSource.ConnectAsync(receiver.Port))
        {
            using var welcome = await source.HelloAsync("vda");
            Assert.That(welcome.Type, Is.EqualTo(FrameType.Welcome));
            var w = ProtocolJson.Decode(welcome, FrameType.Welcome, ProtocolJson.Default.WelcomeMessage);
            Assert.That(w.SeedKey != null, Is.EqualTo(withSeed), "a seed key only from a receiver with seeds");
            foreach (var f in frames) await source.SendAsync(FrameType.SeedHashes, f);
            Assert.That(await source.ErrorAsync(), Does.Contain(error));
        }
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.EqualTo(1));
        MalformedPeerTests.AssertNoCrash(receiver.Process.Stderr);
    }

    [Test]
    public async Task A_seed_directory_takes_its_regular_files_only_and_must_not_be_writable_by_others()
    {
        using var dir = new TempDir("engine");
        var seeds = Directory.CreateDirectory(dir["seeds"]).FullName;
        File.SetUnixFileMode(seeds, (UnixFileMode)0b111_101_101);
        File.WriteAllBytes(Path.Combine(seeds, "debian12.img"), RandomNumberGenerator.GetBytes(4 * Block));
        File.WriteAllBytes(dir["outside.img"], RandomNumberGenerator.GetBytes(4 * Block));
        File.CreateSymbolicLink(Path.Combine(seeds, "link.img"), dir["outside.img"]);
        Directory.CreateDirectory(Path.Combine(seeds, "sub"));
        Assert.That((await Tool.RunAsync("mkfifo", [Path.Combine(seeds, "fifo.img")], TimeSpan.FromSeconds(10))).ExitCode, Is.Zero);
        File.WriteAllBytes(Path.Combine(seeds, ".partial.img"), new byte[Block]);
        var lines = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var options = new Receiver.ReceiverOptions { ImageDir = dir.Path, SeedDir = seeds };

        using (var store = Receiver.SeedStore.Open(options, new LineLogger(lines)))
        {
            Assert.That(store, Is.Not.Null);
            Assert.That(store!.SeedCount, Is.EqualTo(1), string.Join("\n", lines));
        }
        var log = string.Join("\n", lines);
        Assert.That(log, Does.Contain("link.img skipped").And.Contain("symbolic link"));
        Assert.That(log, Does.Contain("fifo.img skipped").And.Contain("not a regular file"));
        Assert.That(log, Does.Contain("sub skipped").And.Contain("not a regular file"));
        Assert.That(log, Does.Not.Contain(".partial"));

        File.SetUnixFileMode(seeds, (UnixFileMode)0b111_111_111);
        var e = Assert.Throws<Receiver.ReceiverException>(() => Receiver.SeedStore.Check(options, new LineLogger(lines)));
        Assert.That(e!.Message, Does.Contain("writable by group or others"));
    }

    [Test]
    public async Task A_seed_that_is_a_symlink_or_not_a_file_stops_the_receiver_with_one_line()
    {
        using var dir = new TempDir("engine");
        var target = Path.Combine(dir.Path, "secret.img");
        File.WriteAllBytes(target, new byte[8192]);
        Directory.CreateDirectory(dir["dst"]);
        var link = Path.Combine(dir.Path, "template.img");
        File.CreateSymbolicLink(link, target);
        foreach (var (seed, error) in new[] { (link, "is a symbolic link"), (dir.Path, "not a regular file"), (Path.Combine(dir.Path, "none.img"), "No such file") })
        {
            var r = await Tool.RunAsync("dotnet", [Repo.CliDll, "receive", "--listen", "127.0.0.1:0", "--image-dir", dir["dst"], "--plaintext", "--once", "--seed", seed],
                TimeSpan.FromSeconds(60));
            Assert.That(r.ExitCode, Is.Not.Zero, r.StandardError);
            Assert.That(r.StandardError, Does.Contain(error));
            Assert.That(r.StandardError.Trim().Split('\n'), Has.Length.EqualTo(1), r.StandardError);
        }
    }
}
