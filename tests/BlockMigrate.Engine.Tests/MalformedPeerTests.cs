using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using BlockMigrate.Maps;
using BlockMigrate.Protocol;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// An authenticated peer sending nonsense gets an Error frame and a log line, never a crash: no stack
/// trace, a --once receiver exits 1 with one line, a service receiver keeps serving.
/// </summary>
[CancelAfter(120_000)]
public class MalformedPeerTests
{
    private static readonly string Lineage = new('a', 32);

    private static string Offer(string fields) => $$"""{"version":1,"disks":[{{{fields}}}]}""";

    public static IEnumerable<TestCaseData> BadHellos()
    {
        yield return new TestCaseData("{\"version\":1}", "no list of disks").SetName("Hello_without_disks");
        yield return new TestCaseData("{\"version\":1,\"disks\":null}", "no list of disks").SetName("Hello_with_null_disks");
        yield return new TestCaseData("{\"version\":1,\"disks\":[]}", "migration of 0 disks").SetName("Hello_with_no_disk");
        yield return new TestCaseData("{\"version\":1,\"disks\":[null]}", "disk entry 0 is null").SetName("Hello_with_a_null_disk_entry");
        yield return new TestCaseData(Offer($"\"size\":1048576,\"block_size\":65536,\"lineage\":\"{Lineage}\",\"resume\":false"), "disk entry 0 has no name")
            .SetName("Hello_with_a_disk_without_a_name");
        yield return new TestCaseData(Offer($"\"name\":null,\"size\":1048576,\"block_size\":65536,\"lineage\":\"{Lineage}\",\"resume\":false"), "disk entry 0 has no name")
            .SetName("Hello_with_a_null_disk_name");
        yield return new TestCaseData(Offer("\"name\":\"vda\",\"size\":1048576,\"block_size\":65536,\"resume\":false"), "disk vda has no lineage")
            .SetName("Hello_with_a_disk_without_a_lineage");
        yield return new TestCaseData(Offer($"\"name\":\"vda\\n\",\"size\":1048576,\"block_size\":65536,\"lineage\":\"{Lineage}\",\"resume\":false"), "refused disk name 'vda?'")
            .SetName("Hello_with_a_disk_name_ending_in_a_newline");
        yield return new TestCaseData(Offer($"\"name\":\"vda\",\"size\":1048576,\"block_size\":65536,\"lineage\":\"{Lineage}\",\"resume\":false,\"allocated\":2097152"), "more than its size")
            .SetName("Hello_claiming_more_allocated_than_size");
        yield return new TestCaseData($$"""{"version":1,"disks":[{"name":"vda","size":1048576,"block_size":65536,"lineage":"{{Lineage}}"},{"name":"vda","size":1048576,"block_size":65536,"lineage":"{{Lineage}}"}]}""", "offered twice")
            .SetName("Hello_offering_a_disk_twice");
        // the return trip's fields (issue 14): a claim needs a well-formed disk lineage and generation, below it, and no resume
        const string Base = "\"name\":\"vda\",\"size\":1048576,\"block_size\":65536,\"lineage\":\"" + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" + "\"";
        yield return new TestCaseData(Offer(Base + ",\"disk_lineage\":\"xyz\",\"generation\":2"), "malformed disk lineage")
            .SetName("Hello_with_a_malformed_disk_lineage");
        yield return new TestCaseData(Offer(Base + $",\"disk_lineage\":\"{Lineage}\",\"generation\":0"), "has generation 0")
            .SetName("Hello_with_generation_zero");
        yield return new TestCaseData(Offer(Base + $",\"disk_lineage\":\"{Lineage}\",\"generation\":2,\"return_base\":2"), "claims return base 2 for generation 2")
            .SetName("Hello_claiming_a_return_base_not_below_its_generation");
        yield return new TestCaseData(Offer(Base + $",\"resume\":true,\"disk_lineage\":\"{Lineage}\",\"generation\":2,\"return_base\":1"), "a return base and a resume at once")
            .SetName("Hello_claiming_a_return_base_and_a_resume");
        yield return new TestCaseData(Offer(Base + ",\"generation\":2,\"return_base\":1"), "without a disk lineage")
            .SetName("Hello_claiming_a_return_base_without_a_disk_lineage");
        yield return new TestCaseData("null", "empty Hello frame").SetName("Hello_that_is_json_null");
        yield return new TestCaseData("[1,2,3]", "malformed Hello frame").SetName("Hello_that_is_a_json_array");
        yield return new TestCaseData("{\"version\":1,\"disks\":[{\"name\":\"vda\",\"size\":-1}]}", "malformed Hello frame").SetName("Hello_with_a_negative_size");
    }

    [TestCaseSource(nameof(BadHellos))]
    public async Task Malformed_hello_gets_an_error_and_a_clean_exit(string json, string error)
    {
        using var dir = new TempDir("engine");
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys: null);
        await using (var source = await RawSource.ConnectAsync(receiver.Port))
        {
            await source.SendAsync(FrameType.Hello, Encoding.UTF8.GetBytes(json));
            var answer = await source.Reader.ReadRequiredAsync("answer", CancellationToken.None);
            Assert.That(answer.Type, Is.EqualTo(FrameType.Error));
            Assert.That(Encoding.UTF8.GetString(answer.Payload), Does.Contain(error));
        }
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.EqualTo(1), receiver.Process.Stderr);
        AssertNoCrash(receiver.Process.Stderr);
        Assert.That(receiver.Process.Stderr, Does.Contain(error));
        Assert.That(Directory.GetFiles(dir["dst"]), Is.Empty, "nothing created");
    }

    [Test]
    public async Task Malformed_hello_does_not_end_a_service_receiver()
    {
        using var dir = new TempDir("engine");
        using var receiver = await ReceiverProcess.StartServiceAsync(dir["dst"], keys: null);
        await using (var bad = await RawSource.ConnectAsync(receiver.Port))
        {
            await bad.SendAsync(FrameType.Hello, "{\"version\":1,\"disks\":[null]}"u8.ToArray());
            Assert.That((await bad.Reader.ReadRequiredAsync("answer", CancellationToken.None)).Type, Is.EqualTo(FrameType.Error));
        }
        await using (var good = await RawSource.ConnectAsync(receiver.Port))
            Assert.That((await good.HelloAsync("vda")).Type, Is.EqualTo(FrameType.Welcome), receiver.Process.Stderr);
        Assert.That(receiver.Process.HasExited, Is.False);
        AssertNoCrash(receiver.Process.Stderr);
    }

    [Test]
    public async Task Source_error_text_is_logged_made_printable_and_cut()
    {
        using var dir = new TempDir("engine");
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys: null);
        await using (var source = await RawSource.ConnectAsync(receiver.Port))
        {
            Assert.That((await source.HelloAsync("vda")).Type, Is.EqualTo(FrameType.Welcome));
            var forged = "bye\n2026-12-02 12:00:00 INFO receive: committed vda from SHA256:forged\r\u001b[2J\u2028" + new string('x', 100_000);
            await source.SendAsync(FrameType.Error, Encoding.UTF8.GetBytes(forged));
            await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(30));
        }
        var lines = receiver.Process.Stderr.Split('\n');
        var line = lines.Single(l => l.Contains("gave up:"));
        Assert.That(line, Does.Contain("gave up: bye?2026-12-02 12:00:00 INFO receive: committed vda from SHA256:forged??[2J?xxx"));
        Assert.That(line.Length, Is.LessThan(600), "cut");
        Assert.That(lines.Count(l => l.Contains("committed vda")), Is.EqualTo(1), "no forged line of its own");
        Assert.That(receiver.Process.Stderr, Does.Not.Contain("\u001b[2J"));
    }

    [Test]
    public async Task Receiver_error_text_is_shown_made_printable_by_the_source()
    {
        using var dir = new TempDir("engine");
        using var source = SourceShim.Start(dir.Path, 4L << 20, 1 << 20);
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var fake = Task.Run(async () =>
        {
            using var c = await listener.AcceptTcpClientAsync();
            var s = c.GetStream();
            await s.ReadExactlyAsync(new byte[8]);
            await s.WriteAsync("Y"u8.ToArray());
            await new FrameReader(s).ReadAsync(CancellationToken.None); // the Hello
            await new FrameWriter(s).WriteAsync(FrameType.Error, Encoding.UTF8.GetBytes("no\nFORGED: migration committed\u001b[31m" + new string('y', 5000)), default, CancellationToken.None);
            await Task.Delay(2000);
        });
        try
        {
            var run = await MigrateRun.RunAsync(source, $"127.0.0.1:{port}", null);
            Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
            Assert.That(run.Error, Does.Contain("no?FORGED: migration committed?[31myyy"));
            Assert.That(run.Error.Length, Is.LessThan(700));
            Assert.That(run.Stderr.Split('\n').Any(l => l.StartsWith("FORGED")), Is.False, run.Stderr);
            Assert.That(run.Stderr, Does.Not.Contain("\u001b[31m"));
        }
        finally
        {
            listener.Stop();
            await fake.WaitAsync(TimeSpan.FromSeconds(30));
        }
    }

    public static IEnumerable<TestCaseData> BadFinalSets()
    {
        // the disk is 1 MiB in blocks of 64 KiB: 16 blocks
        yield return new TestCaseData(new[] { new[] { (0ul, 1ul), (16ul, 1ul) } }, "past the end").SetName("Final_set_past_the_end_of_the_disk_is_refused");
        yield return new TestCaseData(new[] { new[] { (0ul, 16ul), (0ul, 16ul) } }, "out of order or overlapping").SetName("Final_set_with_overlapping_ranges_is_refused");
        yield return new TestCaseData(new[] { new[] { (5ul, 1ul), (2ul, 1ul) } }, "out of order or overlapping").SetName("Final_set_with_descending_ranges_is_refused");
        yield return new TestCaseData(new[] { new[] { (4ul, 4ul) }, new[] { (0ul, 16ul) } }, "overlapping an earlier frame").SetName("Final_set_frames_repeating_ranges_are_refused");
        yield return new TestCaseData(new[] { new[] { (2ul, ulong.MaxValue) } }, "empty or wrapping range").SetName("Final_set_with_a_wrapping_range_is_refused");
    }

    [TestCaseSource(nameof(BadFinalSets))]
    public async Task Bad_final_set(IEnumerable<(ulong First, ulong Count)[]> frames, string error)
    {
        using var dir = new TempDir("engine");
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys: null);
        await using (var source = await RawSource.ConnectAsync(receiver.Port))
        {
            Assert.That((await source.HelloAsync("vda")).Type, Is.EqualTo(FrameType.Welcome));
            foreach (var ranges in frames) await source.SendAsync(FrameType.FinalSet, FinalSetPayload(ranges));
            Assert.That(await source.ErrorAsync(), Does.Contain(error));
        }
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(30)), Is.EqualTo(1));
        AssertNoCrash(receiver.Process.Stderr);
    }

    [Test]
    public async Task Final_set_is_gated_word_by_word_exactly()
    {
        using var dir = new TempDir("engine");
        var gates = Path.Combine(dir["dst"], "no-gates");
        Directory.CreateDirectory(gates);
        const ulong size = 16 << 20, bs = 4096, blocks = size / bs; // 4096 blocks, 64 words
        using var map = DirtyMap.Create(Path.Combine(gates, "vda.map"), size, (uint)bs);
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys: null);
        (ulong, ulong)[] first = [(3, 1), (60, 71), (191, 66)];            // inside a word, across words, whole words
        (ulong, ulong)[] second = [(1000, 1), (1023, 2), (2000, blocks - 2000)]; // a later frame, up to the last block
        await using var source = await RawSource.ConnectAsync(receiver.Port);
        Assert.That((await source.HelloAsync("vda", size, (uint)bs)).Type, Is.EqualTo(FrameType.Welcome), receiver.Process.Stderr);
        await source.SendAsync(FrameType.FinalSet, FinalSetPayload(first));
        var last = source.NextSequence;
        await source.SendAsync(FrameType.FinalSet, FinalSetPayload(second));
        while (true)
        {
            var f = await source.Reader.ReadRequiredAsync("ack", CancellationToken.None);
            Assert.That(f.Type, Is.EqualTo(FrameType.Ack), f.Type == FrameType.Error ? Encoding.UTF8.GetString(f.Payload) : "");
            if (BinaryPrimitives.ReadUInt64LittleEndian(f.Payload) >= last) break;
        }
        var expected = new bool[blocks];
        foreach (var (f0, n) in first.Concat(second))
            for (var b = f0; b < f0 + n; b++) expected[b] = true;
        var words = new ulong[map.Words];
        map.GatePeek(0, words);
        var got = Enumerable.Range(0, (int)blocks).Select(b => (words[b / 64] >> (b % 64) & 1) != 0).ToArray();
        Assert.That(got, Is.EqualTo(expected));
        Assert.That(map.Info().GatedBlocks, Is.EqualTo((ulong)expected.Count(x => x)));
    }

    internal static byte[] FinalSetPayload(IReadOnlyList<(ulong First, ulong Count)> ranges)
    {
        var b = new byte[8 + 16 * ranges.Count];
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), (uint)ranges.Count);
        for (var i = 0; i < ranges.Count; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(8 + 16 * i), ranges[i].First);
            BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16 + 16 * i), ranges[i].Count);
        }
        return b;
    }

    internal static void AssertNoCrash(string stderr)
    {
        Assert.That(stderr, Does.Not.Contain("Unhandled exception"));
        Assert.That(stderr, Does.Not.Match(@"\n\s+at [\w.]+\("), "no stack trace");
        Assert.That(stderr, Does.Not.Contain("internal error"));
    }
}
