using System.Buffers.Binary;
using System.Text.Json;
using BlockMigrate.Maps;
using BlockMigrate.Protocol;
using BlockMigrate.Receiver;
using CsCheck;

namespace BlockMigrate.Fuzz.Tests;

/// <summary>
/// Property-based fuzzing of everything a peer's bytes go through: the frame reader, each payload
/// decoder (Hello, Welcome, VerifyResult, Error, Ack, FinalSet, DataHeader) and the codecs. Inputs are
/// random bytes and valid encodings made by the code's own encoders, then damaged. Every input must
/// either decode to a well-formed value or be refused with <see cref="ProtocolException"/> (an Error
/// frame: <see cref="RemoteFailureException"/>); any other exception fails. Valid values round-trip.
/// </summary>
[TestFixture]
public sealed class ProtocolFuzzTests
{
    // ---- valid values, made the way the engine makes them ------------------------------------------

    private static readonly Gen<string> NameGen =
        Gen.Select(Gen.Char["abcxyzABC019"], Gen.Char["abzAZ09._-"].Array[0, 20], (c, rest) => c + new string(rest));

    private static readonly Gen<string> HexGen = Gen.Byte.Array[16].Select(b => Convert.ToHexString(b).ToLowerInvariant());

    /// <summary>The return trip's fields of an offer: none, or a disk lineage and generation with or without a claim below it.</summary>
    private static readonly Gen<(string? Lineage, ulong Generation, ulong? Base)> ReturnGen =
        Gen.Frequency(
            (1, Gen.Const(((string?)null, 0ul, (ulong?)null))),
            (2, Gen.Select(HexGen, Gen.ULong[1, ulong.MaxValue - 1], Gen.ULong, Gen.Bool,
                (l, g, b, claim) => ((string?)l, g, claim && g > 1 ? (ulong?)(b % (g - 1) + 1) : null))));

    private static readonly Gen<DiskOffer> OfferGen =
        Gen.Select(NameGen, Gen.ULong, Gen.Int[12, 20], HexGen, Gen.Bool, Gen.Bool, ReturnGen,
            (n, size, shift, lineage, resume, finish, ret) => new DiskOffer(n, size, 1u << shift, lineage, resume, finish, null,
                ret.Lineage, ret.Generation, resume || finish ? null : ret.Base));

    private static readonly Gen<HelloMessage> HelloGen =
        // a Hello is whole only with 1 to 64 disks of distinct names (MessageChecks)
        Gen.Select(Gen.Int, OfferGen.List[1, 4].Where(l => l.Select(o => o.Name).Distinct().Count() == l.Count), (v, disks) => new HelloMessage(v, disks));

    private static readonly Gen<WelcomeMessage> WelcomeGen =
        Gen.Select(Gen.Select(NameGen, Gen.Bool, Gen.Bool, (n, r, g) => new DiskAnswer(n, r, g)).List[0, 4],
            Gen.Frequency((1, Gen.Const((List<string>?)null)), (3, Gen.OneOf("zstd", "lz4", "").List[0, 3].Select(l => (List<string>?)l))),
            Gen.Frequency((2, Gen.Const((string?)null)), (1, Gen.Byte.Array[32].Select(b => (string?)Convert.ToHexString(b).ToLowerInvariant()))),
            Gen.Frequency((1, Gen.Const((double?)null)), (2, Gen.Double[0, WelcomeMessage.MaxRecordMs].Select(r => (double?)r))),
            (d, c, k, r) => new WelcomeMessage(d, c, SeedKey: k, RecordMs: r));

    private static readonly Gen<SeedHashes> SeedHashesGen =
        // whole only with ranges ascending and disjoint whose blocks add up to the hashes (1 to MaxHashes)
        Gen.Select(Gen.UShort, Gen.Select(Gen.ULong[0, 1ul << 30], Gen.ULong[1, 40]).List[1, 30], Gen.Byte, (d, steps, fill) =>
        {
            var ranges = new List<BlockRange>();
            ulong next = 0;
            foreach (var (gap, length) in steps)
            {
                ranges.Add(new BlockRange(next + gap, next + gap + length - 1));
                next += gap + length + 1;
            }
            var count = (int)ranges.Sum(r => (long)r.Count);
            var hashes = new byte[count * BlockHash.Size];
            for (var i = 0; i < hashes.Length; i++) hashes[i] = (byte)(fill + i * 7);
            return new SeedHashes(d, ranges, hashes);
        });

    private static readonly Gen<SeedAnswer> SeedAnswerGen =
        Gen.Select(Gen.ULong, Gen.Bool.List[1, 300], (seq, bits) => new SeedAnswer(seq, bits.Count, SeedAnswer.Bitmap(bits)));

    private static readonly Gen<VerifyResultMessage> VerifyGen =
        Gen.Select(Gen.Byte.Array[32].Select(b => Convert.ToHexString(b).ToLowerInvariant()).List[0, 4],
            Gen.OneOf(Gen.Const((string?)null), Gen.Const((string?)VerifyResultMessage.NonzeroDigestName)),
            (l, d) => new VerifyResultMessage(l, d));

    private static readonly Gen<BlockRange> RangeGen =
        Gen.Frequency(
            (3, Gen.Select(Gen.ULong[0, 1ul << 40], Gen.ULong[1, 1ul << 20], (f, n) => new BlockRange(f, f + n - 1))),
            // any range but [0, 2^64-1], whose 2^64 blocks no u64 count can say
            (1, Gen.Select(Gen.ULong, Gen.ULong, (a, b) => new BlockRange(Math.Min(a, b) | (a ^ b) >> 63 & 1, Math.Max(a, b)))));

    private static readonly Gen<FinalSet> FinalSetGen =
        Gen.Frequency(
            // a final set is whole only with ranges ascending and disjoint: gaps and lengths laid end to end
            (4, Gen.Select(Gen.UShort, Gen.Select(Gen.ULong[0, 1ul << 30], Gen.ULong[1, 1ul << 20]).List[0, 40], (d, steps) =>
            {
                var ranges = new List<BlockRange>();
                ulong next = 0;
                foreach (var (gap, length) in steps)
                {
                    ranges.Add(new BlockRange(next + gap, next + gap + length - 1));
                    next += gap + length;
                }
                return new FinalSet(d, ranges);
            })),
            // one range anywhere, up to block 2^64-1
            (1, Gen.Select(Gen.UShort, RangeGen, (d, r) => new FinalSet(d, [r]))));

    private static readonly Gen<(DataHeader Header, byte[] Body)> DataGen =
        Gen.Select(Gen.UShort, Gen.OneOf(DataEncoding.Raw, DataEncoding.Zero), Gen.ULong, Gen.Byte.Array[0, 300], Gen.ULong,
            (disk, enc, offset, body, zeroLength) => enc == DataEncoding.Raw
                ? (new DataHeader(disk, enc, offset, (ulong)body.Length), body)
                : (new DataHeader(disk, enc, offset, zeroLength), Array.Empty<byte>()));

    private static byte[] Payload(DataHeader h, byte[] body)
    {
        var p = new byte[DataHeader.Size + body.Length];
        h.Write(p);
        body.CopyTo(p, DataHeader.Size);
        return p;
    }

    private static Frame FrameOf(FrameType type, byte[] payload) => new(type, 1, payload);

    // ---- what a decoded value must look like ---------------------------------------------------------

    private static void WellFormed(HelloMessage h)
    {
        Assert.That(h.Disks, Is.Not.Null);
        foreach (var d in h.Disks)
        {
            Assert.That(d, Is.Not.Null);
            Assert.That(d.Name, Is.Not.Null);
            Assert.That(d.Lineage, Is.Not.Null);
            // the return trip's fields: a claim only with a well-formed lineage and generation, below it, never with a resume
            if (d.DiskLineage == null) Assert.That(d.Generation == 0 && d.ReturnBase == null);
            else Assert.That(MessageChecks.IsLineage(d.DiskLineage) && d.Generation is > 0 and < ulong.MaxValue);
            if (d.ReturnBase is { } b) Assert.That(b > 0 && b < d.Generation && !d.Resume && !d.Finish);
            // what the receiver does next with an offer's name: a name it accepts becomes a file name
            if (!Fuzz.Refused<ReceiverException>(() => DiskName.Check(d.Name)))
                Assert.That(d.Name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-'), $"accepted disk name '{d.Name}'");
        }
    }

    private static void WellFormed(WelcomeMessage w)
    {
        Assert.That(w.Disks, Is.Not.Null);
        Assert.That(w.Disks.All(d => d is { Name: not null }));
        Assert.That(w.Codecs == null || w.Codecs.All(c => c != null));
        Assert.That(w.SeedKey == null || (w.SeedKey.Length == 64 && w.SeedKey.All(Uri.IsHexDigit)), "a seed key is 64 hex digits");
        Assert.That(w.RecordMs == null || w.RecordMs is >= 0 and <= WelcomeMessage.MaxRecordMs, "a record time is 0 to 10 minutes");
    }

    private static void WellFormed(VerifyResultMessage v)
    {
        Assert.That(v.Sha256, Is.Not.Null);
        Assert.That(v.Sha256.All(s => s != null));
        Assert.That(v.Digest, Is.Null.Or.EqualTo(VerifyResultMessage.NonzeroDigestName));
        if (v.Digest != null) Assert.That(v.Sha256.All(s => s.Length == 64 && s.All(Uri.IsHexDigit)));
    }

    private static byte[] Json<T>(T value, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> info) => ProtocolJson.Encode(value, info);

    // ---- control messages ----------------------------------------------------------------------------

    private static readonly Gen<DiskAnswer> ReturnAnswerGen =
        Gen.Select(Gen.Bool, Gen.Bool, Gen.Frequency((3, Gen.Const((string?)null)), (1, Gen.Char.Array[0, 500].Select(c => (string?)new string(c)))),
            Gen.Frequency((1, Gen.Const((string?)null)), (2, HexGen.Select(h => (string?)h)), (1, Gen.String.Select(s => (string?)s))), Gen.ULong,
            (resume, accepted, reason, lineage, generation) => new DiskAnswer("vda", resume, false, accepted, reason, lineage, generation));

    /// <summary>Any answer to a return claim (or to none) is refused or consistent with the offer.</summary>
    [Test]
    public void WelcomeReturnAnswersAreRefusedOrConsistent() =>
        Fuzz.Run(Gen.Select(ReturnAnswerGen, Gen.Bool), t =>
        {
            var (answer, claim) = t;
            var lineage = new string('a', 32);
            DiskOffer[] offers = [claim ? new("vda", 1 << 20, 65536, lineage, false, false, null, lineage, 2, 1) : new("vda", 1 << 20, 65536, lineage, false)];
            WelcomeMessage? w = null;
            if (Fuzz.Refused<ProtocolException>(() => w = MessageChecks.Check(new WelcomeMessage([answer]), offers))) return;
            var a = w!.Disks[0];
            if (a.ReturnBase) Assert.That(claim && !a.Resume);
            Assert.That(a.ReturnRefused == null || a.ReturnRefused.Length <= MessageChecks.MaxReasonLength);
            if (a.DiskLineage != null) Assert.That(MessageChecks.IsLineage(a.DiskLineage) && a.Generation is > 0 and < ulong.MaxValue);
        });

    [Test]
    public void HelloRoundTrips() =>
        Fuzz.Run(HelloGen, hello =>
        {
            var bytes = Json(hello, ProtocolJson.Default.HelloMessage);
            var back = ProtocolJson.Decode(FrameOf(FrameType.Hello, bytes), FrameType.Hello, ProtocolJson.Default.HelloMessage);
            Assert.That(back.Version, Is.EqualTo(hello.Version));
            Assert.That(back.Disks, Is.EqualTo(hello.Disks));
        });

    [Test]
    public void HostileHelloIsRefusedOrWellFormed() =>
        Fuzz.Run(Fuzz.HostileJson(HelloGen.Select(h => Json(h, ProtocolJson.Default.HelloMessage))), bytes =>
        {
            HelloMessage? h = null;
            if (!Fuzz.Refused<ProtocolException>(() => h = ProtocolJson.Decode(FrameOf(FrameType.Hello, bytes), FrameType.Hello, ProtocolJson.Default.HelloMessage)))
                WellFormed(h!);
        }, Fuzz.Hex);

    [Test]
    public void WelcomeRoundTrips() =>
        Fuzz.Run(WelcomeGen, welcome =>
        {
            var back = ProtocolJson.Decode(FrameOf(FrameType.Welcome, Json(welcome, ProtocolJson.Default.WelcomeMessage)),
                FrameType.Welcome, ProtocolJson.Default.WelcomeMessage);
            Assert.That(back.Disks, Is.EqualTo(welcome.Disks));
            Assert.That(back.Codecs, Is.EqualTo(welcome.Codecs));
            Assert.That(back.RecordMs, Is.EqualTo(welcome.RecordMs));
        });

    [Test]
    public void HostileWelcomeIsRefusedOrWellFormed() =>
        Fuzz.Run(Fuzz.HostileJson(WelcomeGen.Select(w => Json(w, ProtocolJson.Default.WelcomeMessage))), bytes =>
        {
            WelcomeMessage? w = null;
            if (!Fuzz.Refused<ProtocolException>(() => w = ProtocolJson.Decode(FrameOf(FrameType.Welcome, bytes), FrameType.Welcome, ProtocolJson.Default.WelcomeMessage)))
                WellFormed(w!);
        }, Fuzz.Hex);

    [Test]
    public void HostileVerifyResultIsRefusedOrWellFormed() =>
        Fuzz.Run(Fuzz.HostileJson(VerifyGen.Select(v => Json(v, ProtocolJson.Default.VerifyResultMessage))), bytes =>
        {
            VerifyResultMessage? v = null;
            if (!Fuzz.Refused<ProtocolException>(() => v = ProtocolJson.Decode(FrameOf(FrameType.VerifyResult, bytes), FrameType.VerifyResult, ProtocolJson.Default.VerifyResultMessage)))
                WellFormed(v!);
        }, Fuzz.Hex);

    /// <summary>The Verify frame: empty (whole-image SHA-256) or one byte naming a known digest; anything else is refused.</summary>
    [Test]
    public void VerifyRequestRoundTripsAndRefusesTheRest()
    {
        foreach (var d in Enum.GetValues<VerifyDigest>())
            Assert.That(VerifyRequest.Decode(new VerifyRequest(d).Encode()).Digest, Is.EqualTo(d));
        Fuzz.Run(Fuzz.Hostile(Gen.OneOf(Gen.Const(new VerifyRequest(VerifyDigest.WholeImage).Encode()), Gen.Const(new VerifyRequest(VerifyDigest.Nonzero).Encode())), 8), bytes =>
        {
            VerifyDigest d = default;
            var refused = Fuzz.Refused<ProtocolException>(() => d = VerifyRequest.Decode(bytes).Digest);
            var valid = bytes.Length == 0 || (bytes.Length == 1 && bytes[0] == (byte)VerifyDigest.Nonzero);
            Assert.That(refused, Is.EqualTo(!valid));
            if (!refused) Assert.That(d, Is.EqualTo(bytes.Length == 0 ? VerifyDigest.WholeImage : VerifyDigest.Nonzero));
        }, Fuzz.Hex);
    }

    [Test]
    public void ErrorFrameIsAlwaysARemoteFailure() =>
        Fuzz.Run(Gen.Byte.Array[0, 600], bytes =>
        {
            var e = Assert.Throws<RemoteFailureException>(() =>
                ProtocolJson.Decode(FrameOf(FrameType.Error, bytes), FrameType.Welcome, ProtocolJson.Default.WelcomeMessage));
            Assert.That(e!.Message, Is.Not.Null);
        }, Fuzz.Hex);

    // ---- binary payloads -----------------------------------------------------------------------------

    [Test]
    public void AckRoundTripsAndRefusesOtherLengths()
    {
        Fuzz.Run(Gen.ULong, seq =>
        {
            var p = new AckMessage(seq).Encode();
            Assert.That(p, Is.EqualTo(BitConverter.IsLittleEndian ? BitConverter.GetBytes(seq) : BitConverter.GetBytes(seq).Reverse().ToArray()));
            Assert.That(AckMessage.Decode(p).Sequence, Is.EqualTo(seq));
        });
        Fuzz.Run(Fuzz.Hostile(Gen.ULong.Select(s => new AckMessage(s).Encode()), 32), bytes =>
        {
            ulong v = 0;
            var refused = Fuzz.Refused<ProtocolException>(() => v = AckMessage.Decode(bytes).Sequence);
            Assert.That(refused, Is.EqualTo(bytes.Length != AckMessage.Size));
            if (!refused) Assert.That(v, Is.EqualTo(BinaryPrimitives.ReadUInt64LittleEndian(bytes)));
        }, Fuzz.Hex);
    }

    [Test]
    public void FinalSetRoundTrips() =>
        Fuzz.Run(FinalSetGen, set =>
        {
            var back = FinalSet.Decode(set.Encode());
            Assert.That(back.Disk, Is.EqualTo(set.Disk));
            Assert.That(back.Ranges, Is.EqualTo(set.Ranges));
        });

    [Test]
    public void HostileFinalSetIsRefusedOrWellFormed() =>
        Fuzz.Run(Fuzz.Hostile(FinalSetGen.Select(s => s.Encode())), bytes =>
        {
            FinalSet? s = null;
            if (Fuzz.Refused<ProtocolException>(() => s = FinalSet.Decode(bytes))) return;
            Assert.That(bytes.Length, Is.EqualTo(8 + 16 * s!.Ranges.Count));
            Assert.That(s.Ranges.All(r => r.First <= r.Last));
            Assert.That(s.Encode().AsSpan(8).SequenceEqual(bytes.AsSpan(8)));
        }, Fuzz.Hex);

    private static void WellFormed(SeedHashes h)
    {
        Assert.That(h.Count, Is.InRange(1, SeedHashes.MaxHashes));
        Assert.That(h.Ranges.Sum(r => (decimal)r.Count), Is.EqualTo(h.Count));
        for (var i = 1; i < h.Ranges.Count; i++) Assert.That(h.Ranges[i].First, Is.GreaterThan(h.Ranges[i - 1].Last));
        Assert.That(h.Blocks().Count(), Is.EqualTo(h.Count));
    }

    [Test]
    public void SeedHashesRoundTrip() =>
        Fuzz.Run(SeedHashesGen, set =>
        {
            var back = SeedHashes.Decode(set.Encode());
            Assert.That(back.Disk, Is.EqualTo(set.Disk));
            Assert.That(back.Ranges, Is.EqualTo(set.Ranges));
            Assert.That(back.Hashes, Is.EqualTo(set.Hashes));
        });

    [Test]
    public void HostileSeedHashesAreRefusedOrWellFormed() =>
        Fuzz.Run(Fuzz.Hostile(SeedHashesGen.Select(s => s.Encode())), bytes =>
        {
            SeedHashes? s = null;
            if (Fuzz.Refused<ProtocolException>(() => s = SeedHashes.Decode(bytes))) return;
            WellFormed(s!);
            Assert.That(s!.Encode(), Is.EqualTo(bytes));
        }, Fuzz.Hex);

    [Test]
    public void SeedAnswersRoundTrip() =>
        Fuzz.Run(SeedAnswerGen, a =>
        {
            var back = SeedAnswer.Decode(a.Encode());
            Assert.That((back.Sequence, back.Count, back.Supplied), Is.EqualTo((a.Sequence, a.Count, a.Supplied)));
        });

    [Test]
    public void HostileSeedAnswersAreRefusedOrWellFormed() =>
        Fuzz.Run(Fuzz.Hostile(SeedAnswerGen.Select(a => a.Encode())), bytes =>
        {
            SeedAnswer? a = null;
            if (Fuzz.Refused<ProtocolException>(() => a = SeedAnswer.Decode(bytes))) return;
            // one bit per hash, none past them: an answer never claims a block it was not asked about
            Assert.That(a!.Supplied.Length, Is.EqualTo((a.Count + 7) / 8));
            Assert.That(a.SuppliedCount(), Is.LessThanOrEqualTo(a.Count));
            Assert.That(a.Encode(), Is.EqualTo(bytes));
        }, Fuzz.Hex);

    [Test]
    public void DataHeaderRoundTrips() =>
        Fuzz.Run(DataGen, d =>
        {
            var h = DataHeader.Read(Payload(d.Header, d.Body));
            Assert.That(h, Is.EqualTo(d.Header));
        });

    [Test]
    public void HostileDataHeaderIsRefusedOrWellFormed() =>
        Fuzz.Run(Fuzz.Hostile(DataGen.Select(d => Payload(d.Header, d.Body))), bytes =>
        {
            DataHeader h = default;
            if (Fuzz.Refused<ProtocolException>(() => h = DataHeader.Read(bytes))) return;
            Assert.That(Enum.IsDefined(h.Encoding));
            if (h.Encoding != DataEncoding.Zero) Assert.That(h.Length, Is.LessThanOrEqualTo((ulong)DataHeader.MaxDataLength));
            if (h.Encoding == DataEncoding.Raw) Assert.That((ulong)(bytes.Length - DataHeader.Size), Is.EqualTo(h.Length));
        }, Fuzz.Hex);

    // ---- codecs --------------------------------------------------------------------------------------

    /// <summary>Compressible data: runs of a few byte values with random bytes between, up to 64 KiB.</summary>
    private static readonly Gen<byte[]> BlockGen =
        Gen.Select(Gen.Int[0, 1 << 16], Gen.ULong, (n, seed) =>
        {
            var r = new Random((int)seed);
            var b = new byte[n];
            for (var i = 0; i < n;)
            {
                var run = Math.Min(n - i, 1 + r.Next(200));
                var v = (byte)(r.Next(3) == 0 ? r.Next(256) : r.Next(4));
                if (r.Next(4) == 0) r.NextBytes(b.AsSpan(i, run));
                else b.AsSpan(i, run).Fill(v);
                i += run;
            }
            return b;
        });

    [Test]
    public void CodecsRoundTrip() =>
        Fuzz.Run(Gen.Select(BlockGen, Gen.OneOf(DataEncoding.Lz4, DataEncoding.Zstd)), t =>
        {
            var (data, codec) = t;
            var (enc, body) = BlockCodec.Encode(data, new byte[BlockCodec.ScratchSize(data.Length)], codec);
            if (enc == DataEncoding.Raw) return;
            var back = new byte[data.Length];
            BlockCodec.Decode(enc, body.Span, back);
            Assert.That(back.AsSpan().SequenceEqual(data));
        }, t => $"{t.Item2} {Fuzz.Hex(t.Item1)}");

    /// <summary>
    /// A damaged body, or a whole body with the wrong length claimed (as a data header may): the
    /// decoder fills exactly the target or refuses, never writes past it, never throws anything else.
    /// </summary>
    [Test]
    public void HostileCodecBodyIsRefusedOrFillsTheTarget() =>
        Fuzz.Run(Gen.Select(BlockGen, Gen.OneOf(DataEncoding.Lz4, DataEncoding.Zstd), Gen.ULong, Gen.Int[-300, 300], Gen.Int[0, 3]), t =>
        {
            var (data, codec, seed, delta, mode) = t;
            var (enc, body) = BlockCodec.Encode(data, new byte[BlockCodec.ScratchSize(data.Length)], codec);
            var input = enc == DataEncoding.Raw ? data : body.ToArray();
            if (mode != 0) input = Fuzz.Mutate(input, seed);
            var length = Math.Clamp(data.Length + (mode == 2 ? 0 : delta), 0, DataHeader.MaxDataLength);
            // a guard after the target: a decoder writing past what it was given would change it
            var buffer = new byte[length + 64];
            buffer.AsSpan(length).Fill(0xA5);
            var refused = Fuzz.Refused<ProtocolException>(() => BlockCodec.Decode(codec, input, buffer.AsSpan(0, length)));
            Assert.That(buffer.AsSpan(length).ToArray().All(b => b == 0xA5), "decoder wrote past its target");
            if (!refused && mode == 0 && enc != DataEncoding.Raw && length == data.Length)
                Assert.That(buffer.AsSpan(0, length).SequenceEqual(data));
        }, t => $"{t.Item2} mode {t.Item5} delta {t.Item4} seed {t.Item3} {Fuzz.Hex(t.Item1)}");

    [Test]
    public void CodecDecodeOfRandomBytesIsRefusedOrFillsTheTarget() =>
        Fuzz.Run(Gen.Select(Gen.Byte.Array[0, 2048], Gen.OneOf(DataEncoding.Lz4, DataEncoding.Zstd, DataEncoding.Raw, DataEncoding.Zero, (DataEncoding)9),
            Gen.Int[0, DataHeader.MaxDataLength]), t =>
        {
            var (body, codec, length) = t;
            Fuzz.Refused<ProtocolException>(() => BlockCodec.Decode(codec, body, new byte[length]));
        }, t => $"{t.Item2} length {t.Item3} {Fuzz.Hex(t.Item1)}");

    // ---- the frame reader, and each frame's payload through its decoder ------------------------------

    private static readonly Gen<(FrameType Type, byte[] Payload)> AnyFrameGen =
        Gen.Frequency(
            (2, HelloGen.Select(h => (FrameType.Hello, Json(h, ProtocolJson.Default.HelloMessage)))),
            (2, WelcomeGen.Select(w => (FrameType.Welcome, Json(w, ProtocolJson.Default.WelcomeMessage)))),
            (3, DataGen.Select(d => (FrameType.Data, Payload(d.Header, d.Body)))),
            (2, FinalSetGen.Select(s => (FrameType.FinalSet, s.Encode()))),
            (2, Gen.ULong.Select(s => (FrameType.Ack, new AckMessage(s).Encode()))),
            (1, Gen.OneOf(FrameType.Commit, FrameType.Committed, FrameType.Verify).Select(t => (t, Array.Empty<byte>()))),
            (1, Gen.Const((FrameType.Verify, new VerifyRequest(VerifyDigest.Nonzero).Encode()))),
            (1, Gen.String.Select(s => (FrameType.Error, System.Text.Encoding.UTF8.GetBytes(s)))),
            (1, VerifyGen.Select(v => (FrameType.VerifyResult, Json(v, ProtocolJson.Default.VerifyResultMessage)))),
            (2, SeedHashesGen.Select(h => (FrameType.SeedHashes, h.Encode()))),
            (2, SeedAnswerGen.Select(a => (FrameType.SeedAnswer, a.Encode()))));

    /// <summary>Frames as <see cref="FrameWriter"/> puts them on the wire.</summary>
    private static byte[] Wire(List<(FrameType Type, byte[] Payload)> frames)
    {
        var ms = new MemoryStream();
        var w = new FrameWriter(ms);
        foreach (var (type, payload) in frames) w.WriteAsync(type, payload).GetAwaiter().GetResult();
        return ms.ToArray();
    }

    /// <summary>Recomputes the checksum of every frame whose length still fits, so damage inside a frame reaches the checks after the CRC.</summary>
    private static byte[] Reseal(byte[] b)
    {
        for (var pos = 0; pos + FrameFormat.HeaderSize <= b.Length;)
        {
            var len = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(pos + 16));
            if (len > FrameFormat.MaxPayload || pos + FrameFormat.HeaderSize + (long)len > b.Length) break;
            var payload = b.AsSpan(pos + FrameFormat.HeaderSize, (int)len);
            BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(pos + 20), FrameFormat.Checksum(b.AsSpan(pos, 20), payload));
            pos += FrameFormat.HeaderSize + (int)len;
        }
        return b;
    }

    /// <summary>What the receiver or the source does with a frame's payload (ReceiverSession, BlockSender).</summary>
    private static void Dispatch(Frame f)
    {
        switch (f.Type)
        {
            case FrameType.Hello:
                WellFormed(ProtocolJson.Decode(f, FrameType.Hello, ProtocolJson.Default.HelloMessage));
                break;
            case FrameType.Welcome:
                WellFormed(ProtocolJson.Decode(f, FrameType.Welcome, ProtocolJson.Default.WelcomeMessage));
                break;
            case FrameType.VerifyResult:
                WellFormed(ProtocolJson.Decode(f, FrameType.VerifyResult, ProtocolJson.Default.VerifyResultMessage));
                break;
            case FrameType.Data:
            {
                var h = DataHeader.Read(f.Payload);
                if (h.Encoding is DataEncoding.Lz4 or DataEncoding.Zstd)
                    BlockCodec.Decode(h.Encoding, f.Payload.AsSpan(DataHeader.Size), new byte[h.Length]);
                break;
            }
            case FrameType.FinalSet:
                FinalSet.Decode(f.Payload);
                break;
            case FrameType.Ack:
                AckMessage.Decode(f.Payload);
                break;
            case FrameType.Verify:
                VerifyRequest.Decode(f.Payload);
                break;
            case FrameType.SeedHashes:
                WellFormed(SeedHashes.Decode(f.Payload));
                break;
            case FrameType.SeedAnswer:
                SeedAnswer.Decode(f.Payload);
                break;
            case FrameType.Error:
                Assert.Throws<RemoteFailureException>(() => ProtocolJson.Decode(f, FrameType.Hello, ProtocolJson.Default.HelloMessage));
                break;
        }
    }

    [Test]
    public void FramesRoundTrip() =>
        Fuzz.Run(AnyFrameGen.List[1, 6], frames =>
        {
            var reader = new FrameReader(new MemoryStream(Wire(frames)));
            foreach (var (type, payload) in frames)
            {
                var f = reader.ReadAsync(default).GetAwaiter().GetResult()!;
                Assert.That(f.Type, Is.EqualTo(type));
                Assert.That(f.Payload, Is.EqualTo(payload));
                Dispatch(f);
            }
            Assert.That(reader.ReadAsync(default).GetAwaiter().GetResult(), Is.Null);
        });

    [Test]
    public void HostileStreamIsRefusedOrReadsWellFormedFrames() =>
        Fuzz.Run(Gen.Frequency(
                (1, Gen.Byte.Array[0, 200]),
                (3, Gen.Select(AnyFrameGen.List[1, 4].Select(Wire), Gen.ULong, Gen.Bool, (w, seed, reseal) =>
                {
                    var m = Fuzz.Mutate(w, seed);
                    return reseal ? Reseal(m) : m;
                }))),
            bytes =>
            {
                var reader = new FrameReader(new MemoryStream(bytes));
                ulong expected = 1;
                Fuzz.Refused<ProtocolException>(() =>
                {
                    while (reader.ReadAsync(default).GetAwaiter().GetResult() is { } f)
                    {
                        Assert.That(f.Sequence, Is.EqualTo(expected++));
                        Assert.That(Enum.IsDefined(f.Type));
                        Assert.That(f.Payload.Length, Is.LessThanOrEqualTo(FrameFormat.MaxPayload));
                        try
                        {
                            Dispatch(f);
                        }
                        catch (ProtocolException)
                        {
                            // the payload was refused by its decoder: fine, the next frame is still read
                        }
                    }
                });
            }, Fuzz.Hex);

    /// <summary>A header claiming any length: never more than the limit is allocated, a short stream is refused.</summary>
    [Test]
    public void HostileFrameLengthIsBounded() =>
        Fuzz.Run(Gen.Select(Gen.UInt, Gen.Byte.Array[0, 64]), t =>
        {
            var (length, rest) = t;
            var h = new byte[FrameFormat.HeaderSize];
            FrameFormat.WriteHeader(h, FrameType.Data, 1, ReadOnlySpan<byte>.Empty);
            BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(16), length);
            var reader = new FrameReader(new MemoryStream([.. h, .. rest]));
            Frame? f = null;
            if (!Fuzz.Refused<ProtocolException>(() => f = reader.ReadAsync(default).GetAwaiter().GetResult()))
                Assert.That(f!.Payload.Length, Is.EqualTo((int)length));
        });
}

/// <summary>The inputs the fuzzers found, kept as fixed regressions (the C# side's corpus).</summary>
[TestFixture]
public sealed class ProtocolFuzzRegressionTests
{
    /// <summary>Each decoded to a Hello with a null member; the receiver then died of a NullReferenceException.</summary>
    [TestCase("""{"version":1}""")]
    [TestCase("""{"version":1,"disks":null}""")]
    [TestCase("""{"version":1,"disks":[null]}""")]
    [TestCase("""{"version":1,"disks":[{"size":4096,"block_size":4096,"lineage":"00000000000000000000000000000000"}]}""")]
    [TestCase("""{"version":1,"disks":[{"name":"vda","size":4096,"block_size":4096,"lineage":null}]}""")]
    public void HelloWithMissingMembersIsRefused(string json)
    {
        var e = Assert.Throws<ProtocolException>(() =>
            ProtocolJson.Decode(new Frame(FrameType.Hello, 1, System.Text.Encoding.UTF8.GetBytes(json)), FrameType.Hello, ProtocolJson.Default.HelloMessage));
        Assert.That(e!.Message, Does.StartWith("malformed Hello frame"));
    }

    [TestCase("""{"disks":null}""")]
    [TestCase("""{"disks":[null]}""")]
    [TestCase("""{"disks":[{"resume":true}]}""")]
    [TestCase("""{"disks":[],"codecs":[null]}""")]
    public void WelcomeWithMissingMembersIsRefused(string json) =>
        Assert.Throws<ProtocolException>(() =>
            ProtocolJson.Decode(new Frame(FrameType.Welcome, 1, System.Text.Encoding.UTF8.GetBytes(json)), FrameType.Welcome, ProtocolJson.Default.WelcomeMessage));

    [TestCase("""{}""")]
    [TestCase("""{"sha256":[null]}""")]
    [TestCase("""{"sha256":[],"digest":"md5"}""")]
    [TestCase("""{"sha256":["zz"],"digest":"nonzero-sha256"}""")]
    public void VerifyResultWithMissingMembersIsRefused(string json) =>
        Assert.Throws<ProtocolException>(() =>
            ProtocolJson.Decode(new Frame(FrameType.VerifyResult, 1, System.Text.Encoding.UTF8.GetBytes(json)), FrameType.VerifyResult, ProtocolJson.Default.VerifyResultMessage));

    /// <summary>A Hello naming a disk "vda\n" was accepted ("$" of the name pattern matches before a final newline).</summary>
    [TestCase("vda\n")]
    [TestCase("vda\r")]
    [TestCase("\nvda")]
    [TestCase("vda\n\n")]
    public void DiskNameWithALineBreakIsRefused(string name) =>
        Assert.Throws<ReceiverException>(() => DiskName.Check(name));

    /// <summary>A range ending at block 2^64-1 was refused as "wrapping" although its last block does not wrap.</summary>
    [Test]
    public void FinalSetRangeEndingAtTheLastBlockRoundTrips()
    {
        var set = new FinalSet(3, [new BlockRange(5, ulong.MaxValue - 1), new BlockRange(ulong.MaxValue, ulong.MaxValue)]);
        var back = FinalSet.Decode(set.Encode());
        Assert.That(back.Ranges, Is.EqualTo(set.Ranges));
    }

    /// <summary>The Ack frame: 8 bytes little-endian; any other length is a protocol error, not "unexpected frame".</summary>
    [TestCase(0)]
    [TestCase(7)]
    [TestCase(9)]
    public void AckOfWrongLengthIsRefused(int length)
    {
        var e = Assert.Throws<ProtocolException>(() => AckMessage.Decode(new byte[length]));
        Assert.That(e!.Message, Does.Contain("ack frame"));
        Assert.That(new AckMessage(0x0102030405060708).Encode(), Is.EqualTo(new byte[] { 8, 7, 6, 5, 4, 3, 2, 1 }));
    }
}
