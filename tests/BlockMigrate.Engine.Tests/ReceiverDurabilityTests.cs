using System.Text;
using BlockMigrate.Maps;
using BlockMigrate.Protocol;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// What the receiver promises about the images it holds: an image a VM may run on (handed over,
/// committed, still gated, or not written by BlockMigrate at all) is never overwritten by a fresh copy
/// unless the admin says --overwrite; an Ack means fsynced, so a power loss loses no acknowledged block;
/// nothing is written after the commit; the Ack payload is little-endian and checked.
/// </summary>
[CancelAfter(150_000)]
public class ReceiverDurabilityTests
{
    private const ulong DiskSize = 1 << 20;
    private const uint Block = 4096;
    private static readonly string LineageA = new('a', 32), LineageB = new('b', 32);

    private static async Task<Frame> HelloAsync(RawSource s, string lineage, bool resume = false, bool finish = false)
    {
        var hello = new HelloMessage(HelloMessage.CurrentVersion, [new DiskOffer("vda", DiskSize, Block, lineage, resume, finish)]);
        await s.SendAsync(FrameType.Hello, ProtocolJson.Encode(hello, ProtocolJson.Default.HelloMessage));
        return await s.Reader.ReadRequiredAsync("welcome", CancellationToken.None);
    }

    private static byte[] Pattern(byte b, int length) => Enumerable.Repeat(b, length).ToArray();

    /// <summary>Reads the receiver's frames until an Ack of at least <paramref name="seq"/>.</summary>
    private static async Task WaitAckAsync(RawSource s, ulong seq)
    {
        using var t = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (true)
        {
            var f = await s.Reader.ReadAsync(t.Token) ?? throw new AssertionException("closed before the ack");
            if (f.Type == FrameType.Error) Assert.Fail("receiver: " + Encoding.UTF8.GetString(f.Payload));
            if (f.Type == FrameType.Ack && AckMessage.Decode(f.Payload).Sequence >= seq) return;
        }
    }

    /// <summary>
    /// The bug of issue 10 item 1: a gate hand-over is cut with final blocks still held, then a fresh
    /// offer for the same disk truncated the image the destination VM runs on and released the gate.
    /// </summary>
    [Test]
    public async Task A_fresh_offer_never_overwrites_a_handed_over_image_nor_releases_its_gate()
    {
        using var dir = new TempDir("durable");
        var gates = Directory.CreateDirectory(dir["gates"]).FullName;
        using var gate = DirtyMap.Create(Path.Combine(gates, "vda.map"), DiskSize, Block);
        gate.SetState(MapState.Gate);
        string before;
        await using (var receiver = await InProcessReceiver.StartAsync(dir["dst"], gateDir: gates))
        {
            await using var s = await RawSource.ConnectAsync(receiver.Port);
            var welcome = ProtocolJson.Decode(await HelloAsync(s, LineageA), FrameType.Welcome, ProtocolJson.Default.WelcomeMessage);
            Assert.That(welcome.Disks[0].Gated, Is.True);
            await s.SendAsync(FrameType.Data, RawSource.DataPayload(0, Pattern(0x11, (int)DiskSize)));
            var finalSeq = s.NextSequence;
            await s.SendAsync(FrameType.FinalSet, new FinalSet(0, [new BlockRange(10, 19)]).Encode());
            await WaitAckAsync(s, finalSeq);
            Assert.That(receiver.Status("vda"), Is.EqualTo("handed-over"), "recorded before the ack that lets the source hand over");
            Assert.That(gate.Info().GatedBlocks, Is.EqualTo(10ul));
            // the link is cut: the final blocks never land
        }
        Assert.That(gate.Info().GatedBlocks, Is.EqualTo(10ul), "the gate keeps holding them");
        before = ReceiverFaultInjectionTests.Sha(Path.Combine(dir["dst"], "vda.img"));

        await using (var receiver = await InProcessReceiver.StartAsync(dir["dst"], gateDir: gates))
        {
            await using var s = await RawSource.ConnectAsync(receiver.Port);
            var answer = await HelloAsync(s, LineageB);
            Assert.That(answer.Type, Is.EqualTo(FrameType.Error), "a fresh copy over a handed-over image is refused");
            var line = Encoding.UTF8.GetString(answer.Payload);
            Assert.That(line, Does.Contain("refused to overwrite vda.img").And.Contain("handed over").And.Contain("--overwrite").And.Not.Contain("\n"));
            Assert.That(await receiver.ExitCodeAsync(TimeSpan.FromSeconds(30)), Is.EqualTo(1));
        }
        Assert.That(ReceiverFaultInjectionTests.Sha(Path.Combine(dir["dst"], "vda.img")), Is.EqualTo(before), "nothing written");
        Assert.That(gate.Info().GatedBlocks, Is.EqualTo(10ul), "nothing released");
        Assert.That(gate.Info().State & MapState.Gate, Is.EqualTo(MapState.Gate));

        // the state file lost as well: the gate alone still says the image is in use
        File.Delete(Path.Combine(dir["dst"], "vda.img.blockmigrate-state"));
        await using (var receiver = await InProcessReceiver.StartAsync(dir["dst"], gateDir: gates))
        {
            await using var s = await RawSource.ConnectAsync(receiver.Port);
            var answer = await HelloAsync(s, LineageB);
            Assert.That(answer.Type, Is.EqualTo(FrameType.Error));
            Assert.That(Encoding.UTF8.GetString(answer.Payload), Does.Contain("still holds 10 blocks"));
        }
        Assert.That(ReceiverFaultInjectionTests.Sha(Path.Combine(dir["dst"], "vda.img")), Is.EqualTo(before), "nothing written");
        Assert.That(gate.Info().GatedBlocks, Is.EqualTo(10ul), "nothing released");

        // the admin says so explicitly: then the fresh copy goes ahead (and replaces the old attempt's gate)
        await using (var receiver = await InProcessReceiver.StartAsync(dir["dst"], gateDir: gates, overwrite: true))
        {
            await using var s = await RawSource.ConnectAsync(receiver.Port);
            var answer = await HelloAsync(s, LineageB);
            Assert.That(answer.Type, Is.EqualTo(FrameType.Welcome), Encoding.UTF8.GetString(answer.Payload));
            Assert.That(gate.Info().GatedBlocks, Is.Zero);
            Assert.That(receiver.Status("vda"), Is.EqualTo("partial"));
        }
        Assert.That(new FileInfo(Path.Combine(dir["dst"], "vda.img")).Length, Is.EqualTo((long)DiskSize));
    }

    [Test]
    public async Task A_fresh_offer_never_overwrites_a_committed_or_foreign_image()
    {
        using var dir = new TempDir("durable");
        var image = Path.Combine(Directory.CreateDirectory(dir["dst"]).FullName, "vda.img");
        // another VM's disk (or a committed image whose state file was removed): data, no state file
        File.WriteAllBytes(image, Pattern(0x5a, (int)DiskSize));
        var before = ReceiverFaultInjectionTests.Sha(image);
        await using (var receiver = await InProcessReceiver.StartAsync(dir["dst"]))
        {
            await using var s = await RawSource.ConnectAsync(receiver.Port);
            var answer = await HelloAsync(s, LineageA);
            Assert.That(answer.Type, Is.EqualTo(FrameType.Error));
            Assert.That(Encoding.UTF8.GetString(answer.Payload), Does.Contain("refused to overwrite vda.img").And.Contain("no state file"));
        }
        Assert.That(ReceiverFaultInjectionTests.Sha(image), Is.EqualTo(before), "nothing written");
        Assert.That(File.Exists(image + ".blockmigrate-state"), Is.False);

        // committed: refused too (the state file says so)
        File.Delete(image);
        await using (var receiver = await InProcessReceiver.StartAsync(dir["dst"]))
        {
            await using var s = await RawSource.ConnectAsync(receiver.Port);
            Assert.That((await HelloAsync(s, LineageA)).Type, Is.EqualTo(FrameType.Welcome));
            await s.SendAsync(FrameType.Data, RawSource.DataPayload(0, Pattern(0x33, (int)DiskSize)));
            await s.SendAsync(FrameType.Commit, []);
            await ReadUntilAsync(s, FrameType.Committed);
        }
        before = ReceiverFaultInjectionTests.Sha(image);
        await using (var receiver = await InProcessReceiver.StartAsync(dir["dst"]))
        {
            await using var s = await RawSource.ConnectAsync(receiver.Port);
            var answer = await HelloAsync(s, LineageB);
            Assert.That(answer.Type, Is.EqualTo(FrameType.Error));
            Assert.That(Encoding.UTF8.GetString(answer.Payload), Does.Contain("refused to overwrite vda.img").And.Contain("committed"));
        }
        Assert.That(ReceiverFaultInjectionTests.Sha(image), Is.EqualTo(before), "nothing written");
    }

    /// <summary>The CLI flag: <c>receive --overwrite</c> lets a fresh copy replace a foreign image; an image of holes only needs no flag.</summary>
    [Test]
    public async Task Receive_overwrite_flag_and_an_empty_prepared_image()
    {
        using var dir = new TempDir("durable");
        var dst = Directory.CreateDirectory(dir["dst"]).FullName;
        var image = Path.Combine(dst, "vda.img");
        // a destination image prepared for a gate shim (truncate -s): holes only, nothing to lose
        using (var f = File.Create(image)) f.SetLength((long)DiskSize);
        using (var receiver = await ReceiverProcess.StartAsync(dst, null))
        {
            await using var s = await RawSource.ConnectAsync(receiver.Port);
            Assert.That((await HelloAsync(s, LineageA)).Type, Is.EqualTo(FrameType.Welcome));
        }
        File.Delete(image + ".blockmigrate-state");
        File.WriteAllBytes(image, Pattern(0x5a, (int)DiskSize));
        using (var receiver = await ReceiverProcess.StartAsync(dst, null, "--overwrite"))
        {
            await using (var s = await RawSource.ConnectAsync(receiver.Port))
            {
                Assert.That((await HelloAsync(s, LineageA)).Type, Is.EqualTo(FrameType.Welcome));
                await s.SendAsync(FrameType.Commit, []);
                await ReadUntilAsync(s, FrameType.Committed);
            }
            Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.Zero, receiver.Process.Stderr);
            Assert.That(receiver.Process.Stderr, Does.Contain("overwriting vda.img (--overwrite)"));
        }
        Assert.That(File.ReadAllBytes(image).All(b => b == 0), "replaced by the fresh copy");
    }

    /// <summary>Issue 10 item 4: a data frame after Commit was written into the committed image (without fsync).</summary>
    [Test]
    public async Task Data_after_the_commit_is_refused_and_not_written()
    {
        using var dir = new TempDir("durable");
        await using var receiver = await InProcessReceiver.StartAsync(dir["dst"]);
        await using var s = await RawSource.ConnectAsync(receiver.Port);
        Assert.That((await HelloAsync(s, LineageA)).Type, Is.EqualTo(FrameType.Welcome));
        await s.SendAsync(FrameType.Data, RawSource.DataPayload(0, Pattern(0x11, (int)DiskSize)));
        await s.SendAsync(FrameType.Commit, []);
        await ReadUntilAsync(s, FrameType.Committed);
        var committed = ReceiverFaultInjectionTests.Sha(receiver.Image("vda"));

        await s.SendAsync(FrameType.Data, RawSource.DataPayload(0, Pattern(0x22, (int)Block)));
        var error = await ReadUntilAsync(s, FrameType.Error);
        Assert.That(Encoding.UTF8.GetString(error.Payload), Does.Contain("after the commit"));
        Assert.That(ReceiverFaultInjectionTests.Sha(receiver.Image("vda")), Is.EqualTo(committed), "the committed image is untouched");
        Assert.That(receiver.Status("vda"), Is.EqualTo("committed"));
    }

    private static async Task<Frame> ReadUntilAsync(RawSource s, FrameType type)
    {
        using var t = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (true)
        {
            var f = await s.Reader.ReadAsync(t.Token) ?? throw new AssertionException($"closed before a {type} frame");
            if (f.Type == type) return f;
            if (f.Type == FrameType.Error) Assert.Fail("receiver: " + Encoding.UTF8.GetString(f.Payload));
        }
    }

    [Test]
    public void Ack_payload_is_little_endian_and_checked()
    {
        var bytes = new AckMessage(0x0102030405060708).Encode();
        Assert.That(bytes, Is.EqualTo(new byte[] { 8, 7, 6, 5, 4, 3, 2, 1 }));
        Assert.That(AckMessage.Decode(bytes).Sequence, Is.EqualTo(0x0102030405060708ul));
        Assert.Throws<ProtocolException>(() => AckMessage.Decode(new byte[7]));
        Assert.Throws<ProtocolException>(() => AckMessage.Decode(new byte[9]));
        Assert.Throws<ProtocolException>(() => AckMessage.Decode([]));
    }

    /// <summary>
    /// The source reads Acks as <see cref="AckMessage"/>: a payload of the wrong length, or an ack of a
    /// frame it never sent (which would drop blocks from its map that nobody has), fails the migration.
    /// A fake receiver (plaintext) answers the handshake, then sends the bad ack.
    /// </summary>
    [TestCase(7, "ack frame of 7 bytes")]
    [TestCase(9, "ack frame of 9 bytes")]
    [TestCase(-1, "acknowledged frame")]
    public async Task The_source_refuses_a_malformed_ack(int length, string error)
    {
        using var dir = new TempDir("durable");
        using var source = SourceShim.Start(dir.Path, 8L << 20, 4L << 20);
        var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        try
        {
            var fake = Task.Run(async () =>
            {
                using var tcp = await listener.AcceptTcpClientAsync();
                var s = tcp.GetStream();
                await s.ReadExactlyAsync(new byte[8]); // preamble BMIG1RAW
                await s.WriteAsync("Y"u8.ToArray());
                var reader = new FrameReader(s);
                var writer = new FrameWriter(s);
                ProtocolJson.Decode(await reader.ReadRequiredAsync("hello", CancellationToken.None), FrameType.Hello, ProtocolJson.Default.HelloMessage);
                await writer.WriteAsync(FrameType.Welcome, ProtocolJson.Encode(new WelcomeMessage([new DiskAnswer("vda", false)]), ProtocolJson.Default.WelcomeMessage));
                var f = await reader.ReadRequiredAsync("data", CancellationToken.None);
                await writer.WriteAsync(FrameType.Ack, length >= 0 ? new byte[length] : new AckMessage(f.Sequence + 100_000).Encode());
                try
                {
                    while (await reader.ReadAsync(CancellationToken.None) != null) { }
                }
                catch (Exception e) when (e is IOException or ProtocolException) { }
            });
            var run = await MigrateRun.RunAsync(source, $"127.0.0.1:{((System.Net.IPEndPoint)listener.LocalEndpoint).Port}", null);
            Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
            Assert.That(run.Error, Does.Contain(error));
            Assert.That(source.Map.Info().DirtyBlocks, Is.EqualTo(source.Map.Info().Blocks), "no block counted as delivered");
            await fake.WaitAsync(TimeSpan.FromSeconds(30));
        }
        finally
        {
            listener.Stop();
        }
    }

    /// <summary>
    /// Issue 10 item 3: acks came after pwrite, before fsync, so after a power loss at the destination a
    /// resume trusted blocks that were never on disk. Here the destination "loses power" mid-copy (the
    /// simulated disk forgets everything not fsynced); the re-run resumes and must be byte-identical.
    /// </summary>
    [Test]
    public async Task A_power_loss_at_the_destination_loses_no_acknowledged_block()
    {
        using var dir = new TempDir("durable");
        using var source = SourceShim.Start(dir.Path, 32L << 20, 24L << 20);
        var hash = source.Hash();
        var keys = new KeyPair(dir.Path);
        var disk = new SimulatedDisk(Directory.CreateDirectory(dir["dst"]).FullName, Directory.CreateDirectory(dir["shadow"]).FullName);
        await using (var receiver = await InProcessReceiver.StartAsync(dir["dst"], disk, keys: keys))
        {
            var migrate = MigrateRun.RunAsync(source, receiver.Address, keys, "--bandwidth", "40M", "--no-compress");
            var deadline = DateTime.UtcNow.AddSeconds(60);
            while (disk.BytesWritten < 8L << 20 && DateTime.UtcNow < deadline && !migrate.IsCompleted) await Task.Delay(20);
            Assert.That(migrate.IsCompleted, Is.False, "still copying when the power goes");
            disk.PowerOff();
            var run = await migrate;
            Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
            Assert.That(await receiver.ExitCodeAsync(TimeSpan.FromSeconds(30)), Is.EqualTo(1));
        }
        var info = source.Map.Info();
        Assert.That(info.DirtyBlocks, Is.GreaterThan(0ul).And.LessThan(info.Blocks), "some blocks were acknowledged before the power loss");
        disk.Revert();

        await using (var receiver = await InProcessReceiver.StartAsync(dir["dst"], keys: keys))
        {
            var run = await MigrateRun.RunAsync(source, receiver.Address, keys, "--verify");
            Assert.That(run.ExitCode, Is.Zero, run + "\n" + receiver.Log);
            Assert.That(run.Report.GetProperty("resumed").GetBoolean(), Is.True, "the re-run trusts the acknowledged blocks");
            Assert.That(run.Report.GetProperty("bytes_to_send").GetInt64(), Is.LessThan(32L << 20));
            Assert.That(run.Report.GetProperty("verified").GetBoolean(), Is.True);
        }
        Assert.That(ReceiverFaultInjectionTests.Sha(Path.Combine(dir["dst"], "vda.img")), Is.EqualTo(hash), "byte-identical to the source");
    }
}
