using System.Text;
using BlockMigrate.Cli.Commands;
using BlockMigrate.Cli.Config;
using BlockMigrate.Transport;
using CsCheck;

namespace BlockMigrate.Fuzz.Tests;

/// <summary>
/// Fuzzing of the files an admin (or whoever can write them) hands us: the config file
/// (<see cref="KeyValueFile"/>), the receiver's trusted file and the source's known-hosts file
/// (<see cref="TrustList"/>). Each input is written to a private temp file and loaded by the real
/// loader: it loads or is refused with the documented one-line error (<see cref="BlockMigrateException"/>,
/// <see cref="TransportException"/>), nothing else; valid files round-trip.
/// </summary>
[TestFixture]
public sealed class FileFuzzTests
{
    private string _dir = null!;

    [OneTimeSetUp]
    public void CreateDir()
    {
        _dir = Directory.CreateTempSubdirectory("bm-fuzz-files.").FullName;
    }

    [OneTimeTearDown]
    public void RemoveDir() => Directory.Delete(_dir, recursive: true);

    private string Write(byte[] content)
    {
        var path = Path.Combine(_dir, $"f{Environment.CurrentManagedThreadId}");
        File.WriteAllBytes(path, content);
        return path;
    }

    /// <summary>Text made of the characters that matter to line parsers, and some that should not.</summary>
    private static readonly Gen<string> TextGen =
        Gen.Char["[]=#: \t\r\nabcAZ09-_.\0\u00e9\u2028\u00a0\ufeff"].Array[0, 300].Select(c => new string(c));

    // ---- config file -------------------------------------------------------------------------------

    private static readonly Gen<string> KeyGen =
        Gen.Select(Gen.Char['a', 'z'], Gen.Char["abcxyz-09"].Array[0, 12], (c, r) => c + new string(r));

    private static readonly Gen<string> ValueGen =
        Gen.Char["abc XYZ019=#[]/:._-\u00e9"].Array[0, 30].Select(c => new string(c).Trim());

    private static readonly Gen<string> SectionNameGen = Gen.Char["abcXYZ019._-:"].Array[1, 12].Select(c => new string(c));

    private static readonly Gen<Dictionary<string, string>> ValuesGen =
        Gen.Select(KeyGen, ValueGen).List[0, 6].Select(l => l.GroupBy(p => p.Item1).ToDictionary(g => g.Key, g => g.Last().Item2));

    private static readonly Gen<(Dictionary<string, string> Global, List<(string Kind, string Name, Dictionary<string, string> Values)> Sections)> ConfigGen =
        Gen.Select(ValuesGen, Gen.Select(Gen.OneOf("disk", "network", "qemu"), Gen.Frequency((1, Gen.Const("")), (3, SectionNameGen)), ValuesGen).List[0, 4],
            (g, s) => (g, s));

    private static string Render((Dictionary<string, string> Global, List<(string Kind, string Name, Dictionary<string, string> Values)> Sections) c)
    {
        var b = new StringBuilder("# made by FileFuzzTests\n");
        foreach (var (k, v) in c.Global) b.Append($"{k} = {v}\n");
        foreach (var (kind, name, values) in c.Sections)
        {
            b.Append(name == "" ? $"\n[{kind}]\n" : $"\n[{kind} {name}]\n");
            foreach (var (k, v) in values) b.Append($"  {k}={v}\n");
        }
        return b.ToString();
    }

    private static bool Same(Dictionary<string, string> a, Dictionary<string, string> b) =>
        a.Count == b.Count && b.All(kv => a.TryGetValue(kv.Key, out var v) && v == kv.Value);

    [Test]
    public void ConfigRoundTrips() =>
        Fuzz.Run(ConfigGen, c =>
        {
            var file = KeyValueFile.Load(Write(Encoding.UTF8.GetBytes(Render(c))));
            Assert.That(Same(file.Global, c.Global));
            Assert.That(file.Sections.Select(s => (s.Kind, s.Name)), Is.EqualTo(c.Sections.Select(s => (s.Kind, s.Name))));
            for (var i = 0; i < c.Sections.Count; i++) Assert.That(Same(file.Sections[i].Values, c.Sections[i].Values));
        }, Render);

    [Test]
    public void HostileConfigLoadsOrIsRefused() =>
        Fuzz.Run(Gen.Frequency(
                (1, TextGen.Select(Encoding.UTF8.GetBytes)),
                (1, Gen.Byte.Array[0, 300]),
                (3, Fuzz.Mutated(ConfigGen.Select(c => Encoding.UTF8.GetBytes(Render(c)))))),
            bytes =>
            {
                var path = Write(bytes);
                KeyValueFile? file = null;
                if (Fuzz.Refused<UsageException>(() => file = KeyValueFile.Load(path))) return;
                // what the commands do next with it
                Fuzz.Refused<UsageException>(() => Binder.CheckKeys(path, file!.Global, ["to", "key"]));
                Assert.That(file!.Global.Keys.All(k => k.Length > 0 && k == k.Trim()));
                Assert.That(file.Sections.All(s => s.Kind.Length > 0 && s.Values != null));
            }, Fuzz.Hex);

    // ---- trusted and known-hosts files ---------------------------------------------------------------

    private static readonly Gen<string> FingerprintGen =
        Gen.Byte.Array[32].Select(b => "SHA256:" + Convert.ToBase64String(b).TrimEnd('='));

    private static bool Canonical(string fp) =>
        fp.StartsWith("SHA256:", StringComparison.Ordinal) && fp.Length == 50 &&
        fp[7..].All(c => char.IsAsciiLetterOrDigit(c) || c is '+' or '/');

    private static readonly Gen<List<(string Fingerprint, string Comment)>> TrustedGen =
        Gen.Select(FingerprintGen, Gen.Char["abc xyz@.-"].Array[0, 20].Select(c => new string(c))).List[0, 6];

    private static string RenderTrusted(List<(string Fingerprint, string Comment)> l) =>
        "# trusted sources\n\n" + string.Concat(l.Select(e => $"{e.Fingerprint} {e.Comment}\n"));

    private static readonly Gen<List<(string Host, int Port, string Fingerprint)>> KnownGen =
        Gen.Select(Gen.OneOf("10.0.0.1", "dst.example", "[::1]", "h"), Gen.Int[0, 65535], FingerprintGen).List[0, 6];

    private static string RenderKnown(List<(string Host, int Port, string Fingerprint)> l) =>
        "# known receivers\n" + string.Concat(l.Select(e => $"{e.Host}:{e.Port} {e.Fingerprint}\n"));

    [Test]
    public void TrustedFileRoundTrips() =>
        Fuzz.Run(TrustedGen, l =>
        {
            var t = TrustList.LoadTrusted(Write(Encoding.UTF8.GetBytes(RenderTrusted(l))));
            Assert.That(t.Count, Is.EqualTo(l.Select(e => e.Fingerprint).Distinct().Count()));
            Assert.That(l.All(e => t.Contains(e.Fingerprint)));
        }, RenderTrusted);

    [Test]
    public void KnownHostsRoundTrips() =>
        Fuzz.Run(KnownGen, l =>
        {
            var path = Write(Encoding.UTF8.GetBytes(RenderKnown(l)));
            foreach (var (host, port, _) in l)
                Assert.That(TrustList.LookupKnownHost(path, host, port), Is.EqualTo(l.First(e => e.Host == host && e.Port == port).Fingerprint));
            Assert.That(TrustList.LookupKnownHost(path, "absent.example", 1), Is.Null);
        }, RenderKnown);

    [Test]
    public void HostileTrustedFileLoadsCanonicalFingerprintsOrIsRefused() =>
        Fuzz.Run(Gen.Frequency(
                (1, TextGen.Select(Encoding.UTF8.GetBytes)),
                (1, Gen.Byte.Array[0, 300]),
                (3, Fuzz.Mutated(TrustedGen.Select(l => Encoding.UTF8.GetBytes(RenderTrusted(l)))))),
            bytes =>
            {
                var path = Write(bytes);
                TrustList? t = null;
                Fuzz.Refused<TransportException>(() => t = TrustList.LoadTrusted(path));
                // whatever loaded is canonical: a fingerprint compares equal only to the key it names
                if (t != null)
                    Assert.That(File.ReadAllLines(path).Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#'))
                        .Select(l => KeyFingerprint.Normalize(l.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)[0])).All(fp => fp != null && Canonical(fp) && t.Contains(fp)));
            }, Fuzz.Hex);

    [Test]
    public void HostileKnownHostsLookupFindsACanonicalFingerprintOrIsRefused() =>
        Fuzz.Run(Gen.Select(Gen.Frequency(
                (1, TextGen.Select(Encoding.UTF8.GetBytes)),
                (1, Gen.Byte.Array[0, 300]),
                (3, Fuzz.Mutated(KnownGen.Select(l => Encoding.UTF8.GetBytes(RenderKnown(l)))))), Gen.OneOf("10.0.0.1", "dst.example", "h", ""), Gen.Int[0, 65535]),
            t =>
            {
                var (bytes, host, port) = t;
                var path = Write(bytes);
                string? fp = null;
                if (!Fuzz.Refused<TransportException>(() => fp = TrustList.LookupKnownHost(path, host, port)) && fp != null)
                    Assert.That(Canonical(fp), fp);
            }, t => $"{t.Item2}:{t.Item3} {Fuzz.Hex(t.Item1)}");

    [Test]
    public void FingerprintNormalizeIsCanonicalOrNull() =>
        Fuzz.Run(Gen.Frequency((1, TextGen), (1, Gen.String), (3, Gen.Select(FingerprintGen, Gen.ULong,
                (f, s) => Encoding.UTF8.GetString(Fuzz.Mutate(Encoding.UTF8.GetBytes(f), s))))),
            s =>
            {
                var fp = KeyFingerprint.Normalize(s);
                if (fp != null) Assert.That(Canonical(fp), fp);
            });
}
