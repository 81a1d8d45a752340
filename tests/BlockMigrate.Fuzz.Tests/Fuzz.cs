using System.Text;
using System.Text.Json.Nodes;
using CsCheck;

namespace BlockMigrate.Fuzz.Tests;

/// <summary>
/// The shared machinery of the fuzz properties: how long each runs, the mutator that damages valid
/// encodings (bit flips, interesting values, inserts, deletes, truncation, duplication) and the JSON
/// mutator that damages control messages structurally (nulls, wrong types, missing members, deep nesting).
/// </summary>
internal static class Fuzz
{
    /// <summary>
    /// Seconds each property runs: BM_FUZZ_SECONDS, else 1 (the bounded run of ./build.sh test: the
    /// whole project, about 25 properties, stays near 30 s). ./build.sh fuzz sets it higher.
    /// </summary>
    public static int Seconds =>
        int.TryParse(Environment.GetEnvironmentVariable("BM_FUZZ_SECONDS"), out var s) && s > 0 ? s : 1;

    /// <summary>Threads per property: BM_FUZZ_THREADS, else 1 (the test machine is shared).</summary>
    public static int Threads =>
        int.TryParse(Environment.GetEnvironmentVariable("BM_FUZZ_THREADS"), out var t) && t > 0 ? t : 1;

    /// <summary>Runs a property for <see cref="Seconds"/>; CsCheck shrinks a failure and prints its seed.</summary>
    public static void Run<T>(Gen<T> gen, Action<T> property, Func<T, string>? print = null)
    {
        var name = TestContext.CurrentContext.Test.Name;
        gen.Sample(property, writeLine: line => TestContext.Progress.WriteLine($"fuzz {name}: {line}"),
            time: Seconds, threads: Threads, print: print);
    }

    /// <summary>Runs <paramref name="decode"/>; only <typeparamref name="TAllowed"/> (the documented refusal) may escape.</summary>
    public static bool Refused<TAllowed>(Action decode) where TAllowed : Exception
    {
        try
        {
            decode();
            return false;
        }
        catch (TAllowed)
        {
            return true;
        }
    }

    public static string Hex(byte[] b) => b.Length <= 512 ? Convert.ToHexString(b) : Convert.ToHexString(b, 0, 512) + $"... ({b.Length} bytes)";

    private static readonly byte[] InterestingBytes = [0, 1, 0x7f, 0x80, 0xff, (byte)'"', (byte)'\\', (byte)'{', (byte)'[', (byte)':', 0x0a];

    private static readonly ulong[] InterestingWords =
    [
        0, 1, 7, 8, 0x7f, 0x80, 0xff, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff, 0x100000000,
        2u << 20, (2u << 20) + 1, 1u << 20, (1u << 20) + 1, long.MaxValue, 1ul << 63, ulong.MaxValue, ulong.MaxValue - 1,
    ];

    /// <summary>1 to 4 (sometimes up to 24) random damages of <paramref name="input"/>, chosen by <paramref name="seed"/>.</summary>
    public static byte[] Mutate(byte[] input, ulong seed)
    {
        var r = new Random((int)(seed ^ (seed >> 32)));
        var b = new List<byte>(input);
        var rounds = r.Next(10) == 0 ? 1 + r.Next(24) : 1 + r.Next(4);
        for (var k = 0; k < rounds; k++)
        {
            var at = b.Count == 0 ? 0 : r.Next(b.Count);
            switch (r.Next(9))
            {
                case 0 when b.Count > 0:
                    b[at] ^= (byte)(1 << r.Next(8));
                    break;
                case 1 when b.Count > 0:
                    b[at] = r.Next(2) == 0 ? InterestingBytes[r.Next(InterestingBytes.Length)] : (byte)r.Next(256);
                    break;
                case 2:
                    for (var n = 1 + r.Next(8); n > 0; n--) b.Insert(at, (byte)r.Next(256));
                    break;
                case 3 when b.Count > 0:
                    b.RemoveRange(at, Math.Min(b.Count - at, 1 + r.Next(16)));
                    break;
                case 4:
                    b.RemoveRange(at, b.Count - at);
                    break;
                case 5 when b.Count > 0:
                {
                    var w = InterestingWords[r.Next(InterestingWords.Length)];
                    var width = new[] { 1, 2, 4, 8 }[r.Next(4)];
                    for (var i = 0; i < width && at + i < b.Count; i++) b[at + i] = (byte)(w >> (8 * i));
                    break;
                }
                case 6 when b.Count > 0:
                {
                    var len = Math.Min(b.Count - at, 1 + r.Next(32));
                    b.InsertRange(r.Next(b.Count + 1), b.GetRange(at, len));
                    break;
                }
                case 7:
                    for (var n = 1 + r.Next(16); n > 0; n--) b.Add((byte)r.Next(256));
                    break;
                default:
                    if (b.Count > 1) (b[at], b[r.Next(b.Count)]) = (b[r.Next(b.Count)], b[at]);
                    break;
            }
        }
        return b.ToArray();
    }

    /// <summary>Valid encodings damaged by <see cref="Mutate"/>.</summary>
    public static Gen<byte[]> Mutated(Gen<byte[]> valid) => Gen.Select(valid, Gen.ULong, Mutate);

    /// <summary>Half random bytes, half damaged valid encodings.</summary>
    public static Gen<byte[]> Hostile(Gen<byte[]> valid, int maxRandom = 512) =>
        Gen.Frequency((1, Gen.Byte.Array[0, maxRandom]), (3, Mutated(valid)));

    private static readonly Func<JsonNode?>[] Replacements =
    [
        () => null, () => 0, () => -1, () => 1.5, () => JsonValue.Create(ulong.MaxValue), () => JsonNode.Parse("1e400"),
        () => JsonNode.Parse("99999999999999999999999999"), () => "", () => "x\ny", () => "vda\n", () => "vda\r", () => "../../etc/passwd", () => true,
        () => new JsonArray(), () => new JsonObject(), () => new JsonArray(null, null), () => new JsonArray(new JsonObject()),
        Deep, () => new string('a', 5000),
    ];

    /// <summary>Arrays nested deeper than System.Text.Json's reader allows (64).</summary>
    private static JsonNode Deep()
    {
        var node = new JsonArray();
        for (var i = 0; i < 70; i++) node = new JsonArray(node);
        return node;
    }

    /// <summary>
    /// Structural damage to a JSON document: a member replaced (null, wrong type, huge number, deep
    /// nesting), removed, or an unknown one added; then sometimes byte damage on top.
    /// </summary>
    public static byte[] MutateJson(byte[] json, ulong seed)
    {
        var r = new Random((int)(seed ^ (seed >> 32)));
        var root = JsonNode.Parse(json)!;
        for (var k = 1 + r.Next(3); k > 0; k--)
        {
            var nodes = new List<JsonNode>();
            Collect(root, nodes);
            var target = nodes[r.Next(nodes.Count)];
            var parent = target.Parent;
            var replacement = Replacements[r.Next(Replacements.Length)]();
            switch (parent)
            {
                case null:
                    root = replacement ?? new JsonObject();
                    break;
                case JsonObject o:
                {
                    var key = target.GetPropertyName();
                    if (r.Next(4) == 0) o.Remove(key);
                    else if (r.Next(6) == 0) o["unknown_" + r.Next(9)] = replacement;
                    else o[key] = replacement;
                    break;
                }
                case JsonArray a:
                {
                    var i = target.GetElementIndex();
                    if (r.Next(4) == 0) a.RemoveAt(i);
                    else a[i] = replacement;
                    break;
                }
            }
        }
        var bytes = Encoding.UTF8.GetBytes(root.ToJsonString());
        return r.Next(4) == 0 ? Mutate(bytes, seed >> 7) : bytes;
    }

    private static void Collect(JsonNode? node, List<JsonNode> into)
    {
        if (node == null) return;
        into.Add(node);
        switch (node)
        {
            case JsonObject o:
                foreach (var (_, v) in o) Collect(v, into);
                break;
            case JsonArray a:
                foreach (var v in a) Collect(v, into);
                break;
        }
    }

    /// <summary>Valid JSON damaged structurally (<see cref="MutateJson"/>), or by bytes, or random bytes.</summary>
    public static Gen<byte[]> HostileJson(Gen<byte[]> valid) =>
        Gen.Frequency((1, Gen.Byte.Array[0, 256]), (2, Mutated(valid)), (5, Gen.Select(valid, Gen.ULong, MutateJson)));
}
