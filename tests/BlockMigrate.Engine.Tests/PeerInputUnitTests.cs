using BlockMigrate.Maps;
using BlockMigrate.Protocol;
using BlockMigrate.Receiver;

namespace BlockMigrate.Engine.Tests;

/// <summary>The pieces that keep a peer's bytes harmless, one by one.</summary>
public class PeerInputUnitTests
{
    [TestCase("plain text", ExpectedResult = "plain text")]
    [TestCase("two\nlines", ExpectedResult = "two?lines")]
    [TestCase("cr\rlf\r\n", ExpectedResult = "cr?lf??")]
    [TestCase("esc \u001b[2J", ExpectedResult = "esc ?[2J")]
    [TestCase("nul\0del\u007fc1\u0085", ExpectedResult = "nul?del?c1?")]
    [TestCase("ls\u2028ps\u2029", ExpectedResult = "ls?ps?")]
    [TestCase("bidi \u202Egnp.exe\u2066", ExpectedResult = "bidi ?gnp.exe?")]
    [TestCase("ünïcødé ok", ExpectedResult = "ünïcødé ok")]
    public string Peer_text_is_made_printable(string text) => PeerText.Clean(System.Text.Encoding.UTF8.GetBytes(text));

    [Test]
    public void Peer_text_is_cut()
    {
        var s = PeerText.Clean(System.Text.Encoding.UTF8.GetBytes(new string('x', 2_000_000)));
        Assert.That(s, Has.Length.LessThanOrEqualTo(PeerText.MaxChars + 10));
        Assert.That(s, Does.EndWith("[cut]"));
    }

    [Test]
    public void Invalid_utf8_is_replaced_not_thrown() =>
        Assert.That(PeerText.Clean([0x61, 0xff, 0xfe, 0x62]), Is.EqualTo("a\uFFFD\uFFFDb"));

    [TestCase("vda\n")]
    [TestCase("vda\r\n")]
    [TestCase("\nvda")]
    [TestCase(null)]
    public void Name_with_a_newline_or_none_is_invalid(string? name) => Assert.That(DiskName.IsValid(name), Is.False);

    [Test]
    public void Set_bits_word_wise_matches_bit_by_bit([Random(0, 1_000_000, 200)] int seed)
    {
        var rnd = new Random(seed);
        var words = new ulong[8];
        var reference = new ulong[8];
        for (var k = 0; k < 4; k++)
        {
            var a = (ulong)rnd.Next(512);
            var b = (ulong)rnd.Next(512);
            var (first, last) = a <= b ? (a, b) : (b, a);
            GateLink.SetBits(words, first, last);
            for (var bit = first; bit <= last; bit++) reference[bit / 64] |= 1ul << (int)(bit % 64);
        }
        Assert.That(words, Is.EqualTo(reference));
    }

    [Test]
    public void Final_set_decoding_refuses_overlap_and_bad_lengths()
    {
        var ok = new FinalSet(0, [new BlockRange(1, 2), new BlockRange(5, 9)]).Encode();
        Assert.That(FinalSet.Decode(ok).Ranges, Has.Count.EqualTo(2));
        Assert.Throws<ProtocolException>(() => FinalSet.Decode(new FinalSet(0, [new BlockRange(5, 9), new BlockRange(1, 2)]).Encode()));
        Assert.Throws<ProtocolException>(() => FinalSet.Decode(new FinalSet(0, [new BlockRange(1, 5), new BlockRange(5, 9)]).Encode()));
        Assert.Throws<ProtocolException>(() => FinalSet.Decode(ok[..^1]));
        var lying = (byte[])ok.Clone();
        lying[4] = 200; // claims 200 ranges
        Assert.Throws<ProtocolException>(() => FinalSet.Decode(lying));
    }

    [Test]
    public void Welcome_that_does_not_answer_the_offers_is_refused()
    {
        DiskOffer[] offers = [new("vda", 1 << 20, 65536, new string('a', 32), false)];
        Assert.That(MessageChecks.Check(new WelcomeMessage([new DiskAnswer("vda", false)]), offers).Disks, Has.Count.EqualTo(1));
        Assert.Throws<ProtocolException>(() => MessageChecks.Check(new WelcomeMessage(null!), offers));
        Assert.Throws<ProtocolException>(() => MessageChecks.Check(new WelcomeMessage([null!]), offers));
        Assert.Throws<ProtocolException>(() => MessageChecks.Check(new WelcomeMessage([new DiskAnswer(null!, false)]), offers));
        Assert.Throws<ProtocolException>(() => MessageChecks.Check(new WelcomeMessage([new DiskAnswer("vdb", false)]), offers));
        Assert.Throws<ProtocolException>(() => MessageChecks.Check(new WelcomeMessage([]), offers));
    }

    /// <summary>The return trip's answers: a base accepted only where one was claimed, a bounded reason, a well-formed lineage.</summary>
    [Test]
    public void Welcome_return_fields_are_checked_against_the_offers()
    {
        var lineage = new string('a', 32);
        DiskOffer[] claimed = [new("vda", 1 << 20, 65536, lineage, false, false, null, lineage, 2, 1)];
        DiskOffer[] plain = [new("vda", 1 << 20, 65536, lineage, false)];
        Assert.That(MessageChecks.Check(new WelcomeMessage([new DiskAnswer("vda", false, false, true, null, lineage, 2)]), claimed).Disks[0].ReturnBase, Is.True);
        Assert.That(MessageChecks.Check(new WelcomeMessage([new DiskAnswer("vda", false, false, false, "generation: 3", lineage, 2)]), claimed).Disks[0].ReturnRefused,
            Is.EqualTo("generation: 3"));
        Assert.Throws<ProtocolException>(() => MessageChecks.Check(new WelcomeMessage([new DiskAnswer("vda", false, false, true)]), plain), "accepted a base never claimed");
        Assert.Throws<ProtocolException>(() => MessageChecks.Check(new WelcomeMessage([new DiskAnswer("vda", true, false, true)]), claimed), "a base and a resume at once");
        Assert.Throws<ProtocolException>(() => MessageChecks.Check(new WelcomeMessage([new DiskAnswer("vda", false, false, false, new string('x', 401))]), claimed));
        Assert.Throws<ProtocolException>(() => MessageChecks.Check(new WelcomeMessage([new DiskAnswer("vda", false, false, false, null, "zz", 2)]), claimed));
        Assert.Throws<ProtocolException>(() => MessageChecks.Check(new WelcomeMessage([new DiskAnswer("vda", false, false, false, null, lineage, 0)]), claimed));
    }

    [Test]
    public void Busy_set_gives_each_name_to_one_session_at_a_time()
    {
        var busy = new BusySet();
        var names = Enumerable.Range(0, 16).Select(i => $"d{i}").ToArray();
        var holders = new int[names.Length];
        var violations = 0;
        Parallel.For(0, 8, t =>
        {
            var rnd = new Random(t);
            for (var i = 0; i < 200_000; i++)
            {
                var n = rnd.Next(names.Length);
                if (!busy.TryAdd(names[n])) continue;
                if (Interlocked.Increment(ref holders[n]) != 1) Interlocked.Increment(ref violations);
                Interlocked.Decrement(ref holders[n]);
                busy.Remove(names[n]);
            }
        });
        Assert.That(violations, Is.Zero);
        Assert.That(busy.Count, Is.Zero);
    }
}
