using System.Text;
using BlockMigrate.Maps;
using BlockMigrate.Protocol;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// The return trip (issue 14 part 1): A → B, then B → A sending only what B wrote since the hand-over,
/// when A's image is proven untouched; a full copy, with the reason on both sides, otherwise.
/// </summary>
[CancelAfter(240_000)]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class ReturnTripTests
{
    private const long Size = 64L << 20;
    private const int SeqBlocks = 1024; // 4 MiB of sequence-numbered 4 KiB blocks at the start of the disk

    /// <summary>
    /// Host A: its image served by a shim (the VM's disk). Host B: the receiver's image directory, with a
    /// shim serving NAME.img whose map is in the receiver's gate-map directory (the destination's shim).
    /// The disk is called "source" on both hosts, so A's image is also where A's receiver looks for it.
    /// </summary>
    private sealed class Bed : IDisposable
    {
        public readonly TempDir Dir = new("return");
        public readonly KeyPair Keys;
        public readonly SourceShim A;
        public readonly NbdkitServer BShim;
        public readonly DirtyMap BMap;
        public string BImage => Path.Combine(Dir["b"], "source.img");
        public string BGates => Dir["bgates"];
        public string DiskA => $"source={A.Image}:{A.MapPath}";
        public string DiskB => $"source={BImage}:{BMap.Path}";

        public Bed(long randomBytes = 16L << 20)
        {
            Keys = new KeyPair(Dir.Path);
            Directory.CreateDirectory(Dir["a"]);
            Directory.CreateDirectory(Dir["b"]);
            Directory.CreateDirectory(BGates);
            A = SourceShim.Start(Dir["a"], Size, randomBytes);
            using (var f = File.Create(BImage)) f.SetLength(Size); // holes only: nothing to lose
            var map = Path.Combine(BGates, "source.map");
            BShim = NbdkitServer.Start(Dir["b"], NbdkitServer.FilterArgs(BImage, map));
            Tool.RunAsync("nbdinfo", ["--size", BShim.Uri], TimeSpan.FromSeconds(10)).GetAwaiter().GetResult();
            BMap = DirtyMap.Open(map);
        }

        public Task<MigrateRun> MigrateAsync(string disk, string to, params string[] extra) =>
            MigrateRun.RunArgsAsync(new[] { "--disk", disk, "--to", to, "--json", "--timeout", "120", "--key", Keys.SourceKey,
                "--peer-fingerprint", Keys.ReceiverFingerprint, "--keep-source-frozen" }.Concat(extra).ToArray());

        /// <summary>A → B; the receiver on B is given B's gate-map directory.</summary>
        public async Task<MigrateRun> FirstTripAsync()
        {
            await using var b = await InProcessReceiver.StartAsync(Dir["b"], gateDir: BGates, keys: Keys);
            var run = await MigrateAsync(DiskA, b.Address);
            Assert.That(run.ExitCode, Is.Zero, run + "\nreceiver:\n" + b.Log);
            Assert.That(b.Status("source"), Is.EqualTo("committed"));
            Assert.That(State(A.Image + ".blockmigrate-state").GetProperty("status").GetString(), Is.EqualTo("handed-away"), run.Stderr);
            return run;
        }

        /// <summary>B → A; returns the run and A's receiver log.</summary>
        public async Task<(MigrateRun Run, string Log)> ReturnAsync(params string[] extra)
        {
            await using var a = await InProcessReceiver.StartAsync(Dir["a"], gateDir: Dir["agates"], keys: Keys);
            var run = await MigrateAsync(DiskB, a.Address, extra);
            await a.ExitCodeAsync(TimeSpan.FromSeconds(30));
            return (run, a.Log);
        }

        public void Dispose()
        {
            BMap.Dispose();
            BShim.Dispose();
            A.Dispose();
            Dir.Dispose();
        }
    }

    private static System.Text.Json.JsonElement State(string path) => System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(path)).RootElement;

    private static async Task AssertSameAsync(string x, string y)
    {
        var same = await Tool.BlockMigrateAsync("verify", x, y);
        Assert.That(same.ExitCode, Is.Zero, "images identical: " + same.StandardOutput + same.StandardError);
    }

    /// <summary>The highest sequence number the writer saw acknowledged before <paramref name="frozenAt"/>.</summary>
    private static long AckedBefore(string log, long frozenAt) =>
        File.ReadAllLines(log).Select(l => l.Split(' ')).Where(p => p.Length == 2 && long.Parse(p[1]) < frozenAt)
            .Select(p => long.Parse(p[0])).DefaultIfEmpty(-1).Max();

    private static async Task AssertNoLostWriteAsync(string image, long acked)
    {
        var check = await Tool.RunAsync("/usr/bin/python3", [Path.Combine(Repo.Root, "tools", "seqwriter.py"), "check", image,
            "--blocks", SeqBlocks.ToString(), "--at-least", acked.ToString()]);
        Assert.That(check.ExitCode, Is.Zero, check.StandardOutput + check.StandardError);
    }

    [Test]
    public async Task A_to_B_and_back_under_a_writer_sends_only_what_B_wrote_and_loses_no_write()
    {
        using var bed = new Bed();
        bed.BMap.MarkBlocks(500, 20); // left over from B's past: must not count as "written since the hand-over"

        // A → B with a writer at A
        MigrateRun first;
        long ackedAtA;
        using (var writer = BackgroundProcess.Python("seqwriter.py", "write", bed.A.Uri, "--blocks", SeqBlocks.ToString(), "--log", bed.Dir["wa.log"], "--rate", "2000"))
        {
            await Task.Delay(1000);
            first = await bed.FirstTripAsync();
            writer.Kill();
            ackedAtA = AckedBefore(bed.Dir["wa.log"], first.Report.GetProperty("frozen_at_unix_ms").GetInt64());
        }
        Assert.That(ackedAtA, Is.GreaterThan(100), "the writer was writing at A");
        await AssertNoLostWriteAsync(bed.BImage, ackedAtA);
        Assert.That(first.Report.GetProperty("return_base_blocks").GetInt64(), Is.Zero);

        // the destination's map now holds exactly "written since generation 1": nothing yet
        Assert.That(bed.BMap.DirtyCount(), Is.Zero, "cleared at the hand-over");
        var cookie = ResumeCookie.Decode(bed.BMap.GetCookie());
        Assert.That(cookie.State, Is.EqualTo(CookieState.Returnable));
        Assert.That(cookie.ReturnGeneration, Is.EqualTo(1ul));
        var bState = State(Path.Combine(bed.Dir["b"], "source.img.blockmigrate-state"));
        var aState = State(bed.A.Image + ".blockmigrate-state");
        Assert.That(bState.GetProperty("disk_lineage").GetString(), Is.EqualTo(cookie.LineageHex).And.EqualTo(aState.GetProperty("disk_lineage").GetString()));
        Assert.That(bState.GetProperty("generation").GetUInt64(), Is.EqualTo(1ul));
        Assert.That(aState.GetProperty("generation").GetUInt64(), Is.EqualTo(1ul));

        // B runs the VM (the writer continues there), then B → A with the writer still running
        MigrateRun back;
        string aLog;
        long ackedAtB;
        using (var writer = BackgroundProcess.Python("seqwriter.py", "write", bed.BShim.Uri, "--blocks", SeqBlocks.ToString(), "--continue-from", bed.BImage,
                   "--log", bed.Dir["wb.log"], "--rate", "2000"))
        {
            await Task.Delay(1500);
            var written = bed.BMap.DirtyRanges();
            Assert.That(written, Is.Not.Empty);
            Assert.That(written[^1].Last * bed.BMap.BlockSize, Is.LessThan((ulong)SeqBlocks * 4096), "only the blocks the writer wrote are marked");
            (back, aLog) = await bed.ReturnAsync();
            writer.Kill();
            Assert.That(back.ExitCode, Is.Zero, back + "\nreceiver A:\n" + aLog);
            ackedAtB = AckedBefore(bed.Dir["wb.log"], back.Report.GetProperty("frozen_at_unix_ms").GetInt64());
        }
        Assert.That(ackedAtB, Is.GreaterThan(ackedAtA + 100), "the writer was writing at B");
        await AssertNoLostWriteAsync(bed.A.Image, ackedAtB);
        await AssertSameAsync(bed.A.Image, bed.BImage);

        Assert.That(aLog, Does.Contain("return base accepted"));
        Assert.That(back.Stderr, Does.Contain("return trip: the receiver holds generation 1"));
        var r = back.Report;
        var blocks = (long)(Size / bed.BMap.BlockSize);
        Assert.That(r.GetProperty("return_base_blocks").GetInt64(), Is.GreaterThan(blocks * 9 / 10), "most blocks kept at A");
        Assert.That(r.GetProperty("blocks_sent").GetInt64(), Is.LessThan(blocks / 10));
        Assert.That(r.GetProperty("bytes_on_wire").GetInt64(), Is.LessThan(first.Report.GetProperty("bytes_on_wire").GetInt64() / 5),
            $"the return costs far less than the first trip ({back.Report} vs {first.Report})");
        // A now holds generation 2 (committed); B's image is the handed-away record of generation 2
        var aNow = State(bed.A.Image + ".blockmigrate-state");
        Assert.That(aNow.GetProperty("status").GetString(), Is.EqualTo("committed"));
        Assert.That(aNow.GetProperty("generation").GetUInt64(), Is.EqualTo(2ul));
        var bNow = State(bed.BImage + ".blockmigrate-state");
        Assert.That(bNow.GetProperty("status").GetString(), Is.EqualTo("handed-away"));
        Assert.That(bNow.GetProperty("generation").GetUInt64(), Is.EqualTo(2ul));
        bed.A.Map.Thaw();
        bed.BMap.Thaw();
    }

    /// <summary>
    /// A write through the file behind our back (not through the shim), with its mtime put back: only the
    /// ctime shows it. The receiver must refuse the base and the full copy must overwrite the block.
    /// </summary>
    [Test]
    public async Task A_base_written_behind_our_back_is_refused_and_fully_copied()
    {
        using var bed = new Bed();
        await bed.FirstTripAsync();
        var mtime = File.GetLastWriteTimeUtc(bed.A.Image);
        await Task.Delay(20);
        using (var f = new FileStream(bed.A.Image, FileMode.Open, FileAccess.Write))
        {
            f.Position = Size - (1 << 20); // a block B never writes
            f.Write(Encoding.ASCII.GetBytes("written behind BlockMigrate's back"));
        }
        File.SetLastWriteTimeUtc(bed.A.Image, mtime); // utimensat: mtime back, ctime not

        var (back, aLog) = await bed.ReturnAsync();
        Assert.That(back.ExitCode, Is.Zero, back + "\nreceiver A:\n" + aLog);
        Assert.That(aLog, Does.Contain("return base refused: image changed"));
        Assert.That(back.Stderr, Does.Contain("return base refused by the receiver: image changed"));
        Assert.That(back.Report.GetProperty("return_base_blocks").GetInt64(), Is.Zero);
        await AssertSameAsync(bed.A.Image, bed.BImage);
        bed.A.Map.Thaw();
        bed.BMap.Thaw();
    }

    /// <summary>A map claiming another generation (a wrong or hostile claim): a full copy, nothing stale kept.</summary>
    [Test]
    public async Task A_wrong_generation_falls_back_to_a_full_copy()
    {
        using var bed = new Bed();
        await bed.FirstTripAsync();
        var cookie = ResumeCookie.Decode(bed.BMap.GetCookie());
        bed.BMap.SetCookie(ResumeCookie.Returnable(cookie.LineageHex, 7).Encode());
        // make A's stale block differ from B's, where B's map says nothing was written
        using (var f = new FileStream(bed.BImage, FileMode.Open, FileAccess.Write))
        {
            f.Position = 2 << 20;
            f.Write(Encoding.ASCII.GetBytes("B's data, unmarked in B's map"));
        }

        var (back, aLog) = await bed.ReturnAsync();
        Assert.That(back.ExitCode, Is.Zero, back + "\nreceiver A:\n" + aLog);
        Assert.That(aLog, Does.Contain("return base refused: generation: source.img holds generation 1, the source's map is relative to generation 7"));
        Assert.That(back.Stderr, Does.Contain("return base refused by the receiver: generation"));
        Assert.That(back.Report.GetProperty("return_base_blocks").GetInt64(), Is.Zero);
        await AssertSameAsync(bed.A.Image, bed.BImage);
        bed.A.Map.Thaw();
        bed.BMap.Thaw();
    }

    /// <summary>A hand-driven source's Hello with a return claim; returns the receiver's answer for the disk.</summary>
    private static async Task<DiskAnswer> ClaimAsync(Bed bed, string diskLineage, ulong generation, ulong claimed)
    {
        await using var a = await InProcessReceiver.StartAsync(bed.Dir["a"], gateDir: bed.Dir["agates"]);
        await using var s = await RawSource.ConnectAsync(a.Port);
        var hello = new HelloMessage(HelloMessage.CurrentVersion,
            [new DiskOffer("source", Size, bed.BMap.BlockSize, new string('c', 32), false, false, null, diskLineage, generation, claimed)]);
        await s.SendAsync(FrameType.Hello, ProtocolJson.Encode(hello, ProtocolJson.Default.HelloMessage));
        using var answer = await s.Reader.ReadRequiredAsync("welcome", CancellationToken.None);
        Assert.That(answer.Type, Is.EqualTo(FrameType.Welcome), Encoding.UTF8.GetString(answer.Payload));
        return ProtocolJson.Decode(answer, FrameType.Welcome, ProtocolJson.Default.WelcomeMessage).Disks[0];
    }

    /// <summary>
    /// A hostile peer claims a lineage it does not hold: refused with the reason, and the image is then copied
    /// afresh (emptied first), so nothing stale of A's survives to mix with what that peer sends; the claim
    /// also cost the record, so even the right claim later finds none.
    /// </summary>
    [Test]
    public async Task A_claim_of_another_lineage_is_refused_and_keeps_nothing_stale()
    {
        using var bed = new Bed();
        await bed.FirstTripAsync();
        var lineage = ResumeCookie.Decode(bed.BMap.GetCookie()).LineageHex;
        Assert.That(ImageHasData(bed.A.Image), Is.True);

        var other = await ClaimAsync(bed, new string('f', 32), 2, 1);
        Assert.That(other.ReturnBase, Is.False);
        Assert.That(other.ReturnRefused, Does.StartWith("different lineage"));
        Assert.That(new FileInfo(bed.A.Image).Length, Is.EqualTo(Size));
        Assert.That(ImageHasData(bed.A.Image), Is.False, "a full copy starts from an empty image: nothing stale kept");

        var late = await ClaimAsync(bed, lineage, 2, 1);
        Assert.That(late.ReturnBase, Is.False);
        Assert.That(late.ReturnRefused, Does.StartWith("record missing"));
        bed.A.Map.Thaw();
    }

    /// <summary>An accepted claim consumes the record: the same claim replayed finds none (and a full copy follows).</summary>
    [Test]
    public async Task An_accepted_claim_consumes_the_record()
    {
        using var bed = new Bed();
        await bed.FirstTripAsync();
        var lineage = ResumeCookie.Decode(bed.BMap.GetCookie()).LineageHex;
        var right = await ClaimAsync(bed, lineage, 2, 1);
        Assert.That(right.ReturnBase, Is.True, right.ReturnRefused);
        Assert.That(right.DiskLineage, Is.EqualTo(lineage));
        Assert.That(right.Generation, Is.EqualTo(2ul));
        Assert.That(ImageHasData(bed.A.Image), Is.True, "the base is kept");
        var replay = await ClaimAsync(bed, lineage, 2, 1);
        Assert.That(replay.ReturnBase, Is.False, "the record went with the first claim");
        Assert.That(replay.ReturnRefused, Does.StartWith("record missing"));
        bed.A.Map.Thaw();
    }

    private static bool ImageHasData(string path)
    {
        using var f = File.OpenHandle(path);
        return BlockMigrate.Interop.SparseFile.NextData(f, 0, RandomAccess.GetLength(f)) < RandomAccess.GetLength(f);
    }

    /// <summary>The return killed with SIGKILL mid-way, then re-run: it resumes (A keeps what arrived) and ends identical.</summary>
    [Test]
    public async Task A_return_killed_mid_way_is_resumed_and_ends_identical()
    {
        using var bed = new Bed();
        await bed.FirstTripAsync();
        // B's VM writes 24 MiB of random data: enough to kill the return in the middle at 20 Mbit/s
        var random = new byte[24 << 20];
        Random.Shared.NextBytes(random);
        File.WriteAllBytes(bed.Dir["rnd"], random);
        var put = await Tool.RunAsync("nbdcopy", [bed.Dir["rnd"], bed.BShim.Uri], TimeSpan.FromSeconds(60));
        Assert.That(put.ExitCode, Is.Zero, put.StandardError);
        Assert.That(bed.BMap.DirtyCount() * bed.BMap.BlockSize, Is.GreaterThanOrEqualTo(24ul << 20));

        await using (var a = await InProcessReceiver.StartAsync(bed.Dir["a"], gateDir: bed.Dir["agates"], keys: bed.Keys))
        {
            var env = new Dictionary<string, string> { ["BLOCKMIGRATE_RUN_DIR"] = bed.Dir["run"] };
            using var migrate = BackgroundProcess.Cli(env, "migrate", "--disk", bed.DiskB, "--to", a.Address, "--key", bed.Keys.SourceKey,
                "--peer-fingerprint", bed.Keys.ReceiverFingerprint, "--bandwidth", "2.5M", "--keep-source-frozen");
            await migrate.WaitForStderrLineAsync("phase: BulkCopy$", TimeSpan.FromSeconds(30));
            await Task.Delay(3000);
            // status, from another shell: blocks sent so far, and those taken from the return base
            var status = await StatusCommandTests.Status(env, "--json");
            var m = System.Text.Json.JsonDocument.Parse(status.StandardOutput).RootElement.GetProperty("migrations")[0];
            Assert.That(m.GetProperty("return_base_blocks").GetInt64(), Is.GreaterThan(0), status.StandardOutput);
            Assert.That(m.GetProperty("blocks_sent").GetInt64(), Is.GreaterThan(0), status.StandardOutput);
            var text = await StatusCommandTests.Status(env);
            Assert.That(text.StandardOutput, Does.Match(@"blocks:   \d+ sent, \d+ taken from the return base"));
            Assert.That(migrate.HasExited, Is.False, "still copying: " + migrate.Stderr);
            Assert.That(migrate.Stderr, Does.Contain("return trip: the receiver holds generation 1"));
            migrate.Kill();
            Assert.That(await a.ExitCodeAsync(TimeSpan.FromSeconds(30)), Is.EqualTo(1), "nothing committed");
            Assert.That(a.Status("source"), Is.EqualTo("partial"));
        }

        var (again, aLog) = await bed.ReturnAsync();
        Assert.That(again.ExitCode, Is.Zero, again + "\nreceiver A:\n" + aLog);
        Assert.That(again.Report.GetProperty("resumed").GetBoolean(), Is.True, again.Stderr);
        Assert.That(again.Report.GetProperty("blocks_sent").GetInt64() * bed.BMap.BlockSize, Is.LessThan(24L << 20), "the resumed run sends less than what B wrote");
        await AssertSameAsync(bed.A.Image, bed.BImage);
        var aNow = State(bed.A.Image + ".blockmigrate-state");
        Assert.That(aNow.GetProperty("generation").GetUInt64(), Is.EqualTo(2ul), "the resume kept the generation the copy began with");
        bed.A.Map.Thaw();
        bed.BMap.Thaw();
    }
}
