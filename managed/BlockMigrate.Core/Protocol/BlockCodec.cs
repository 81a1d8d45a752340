using K4os.Compression.LZ4;

namespace BlockMigrate.Protocol;

/// <summary>
/// The codec table: every compression a data frame may carry, one row each (its wire id, its name, how
/// to encode and decode, its worst-case output size). Everything else is derived from it: the receiver's
/// Welcome lists the names of the <see cref="Negotiated"/> rows, the CLI's <c>--codec</c> takes
/// <c>auto</c> or a row's name, the report counts the bytes sent with each row as <c>bytes_NAME</c>.
/// Adding a codec: a <see cref="DataEncoding"/> value and a row in <see cref="All"/>.
/// <para>
/// Adaptive compression of a data range with the codec asked for (LZ4, fast; or zstd, a third fewer
/// bytes on OS files at a third of the speed): compressed when that saves at least an eighth, raw otherwise.
/// Which codec to ask for is the engine's choice, from the link's rate (<c>Engine/CodecPolicy.cs</c>).
/// </para>
/// </summary>
public sealed class BlockCodec
{
    /// <summary>Compresses source into target; the length, or ≤ 0 when it did not fit or failed.</summary>
    public delegate int EncodeFn(ReadOnlySpan<byte> source, Span<byte> target);

    /// <summary>Decompresses source into target; the length written, or &lt; 0 for a corrupt body.</summary>
    public delegate int DecodeFn(ReadOnlySpan<byte> source, Span<byte> target);

    private readonly EncodeFn _encode;
    private readonly DecodeFn _decode;
    private readonly Func<int, int> _bound;

    private BlockCodec(DataEncoding encoding, string name, string displayName, bool negotiated, EncodeFn encode, DecodeFn decode, Func<int, int> bound)
    {
        (Encoding, Name, DisplayName, Negotiated) = (encoding, name, displayName, negotiated);
        (_encode, _decode, _bound) = (encode, decode, bound);
    }

    /// <summary>The id in a data frame's header.</summary>
    public DataEncoding Encoding { get; }

    /// <summary>Lower case: in the Welcome's list, <c>--codec NAME</c>, the report's <c>bytes_NAME</c>, the log's "codec: NAME".</summary>
    public string Name { get; }

    /// <summary>How the text report writes it ("LZ4").</summary>
    public string DisplayName { get; }

    /// <summary>Sent only to a receiver whose Welcome lists <see cref="Name"/>; the others every receiver decodes.</summary>
    public bool Negotiated { get; }

    /// <summary>The largest output of encoding <paramref name="length"/> bytes.</summary>
    public int Bound(int length) => _bound(length);

    /// <summary>The name of <see cref="Zstd"/> (a constant, for <see cref="WelcomeMessage.Zstd"/>).</summary>
    public const string ZstdName = "zstd";

    public static readonly BlockCodec Lz4 = new(DataEncoding.Lz4, "lz4", "LZ4", negotiated: false,
        (s, t) => LZ4Codec.Encode(s, t, LZ4Level.L00_FAST), LZ4Codec.Decode, LZ4Codec.MaximumOutputSize);

    public static readonly BlockCodec Zstd = new(DataEncoding.Zstd, ZstdName, "zstd", negotiated: true,
        ZstdCodec.Compress, ZstdCodec.Decompress, ZstdCodec.Bound);

    /// <summary>The table, in the order the reports list them.</summary>
    public static IReadOnlyList<BlockCodec> All { get; } = [Lz4, Zstd];

    /// <summary>The names a receiver lists in its Welcome: the codecs it decodes that need asking for.</summary>
    public static IReadOnlyList<string> Advertised { get; } = All.Where(c => c.Negotiated).Select(c => c.Name).ToArray();

    /// <summary>The row of a wire id; null for Raw, Zero and ids no row has.</summary>
    public static BlockCodec? Of(DataEncoding encoding)
    {
        foreach (var c in All) // per frame: no closure
            if (c.Encoding == encoding) return c;
        return null;
    }

    /// <summary>The row named <paramref name="name"/> (as <see cref="Name"/>); null if none.</summary>
    public static BlockCodec? Named(string name) => All.FirstOrDefault(c => c.Name == name);

    /// <summary>The codecs a receiver with this Welcome list decodes: every one not negotiated, and those it lists.</summary>
    public static IReadOnlyList<BlockCodec> Decodable(IReadOnlyList<string>? welcomeCodecs) =>
        All.Where(c => !c.Negotiated || welcomeCodecs?.Contains(c.Name) == true).ToArray();

    /// <summary>Compresses <paramref name="data"/> into <paramref name="scratch"/>; returns the encoding and the bytes to send.</summary>
    public static (DataEncoding Encoding, ReadOnlyMemory<byte> Body) Encode(ReadOnlyMemory<byte> data, byte[] scratch, DataEncoding codec)
    {
        var n = Of(codec) is { } c ? c._encode(data.Span, scratch) : -1;
        if (n <= 0 || n > data.Length - data.Length / 8) return (DataEncoding.Raw, data);
        return (codec, scratch.AsMemory(0, n));
    }

    /// <summary>A scratch buffer for <see cref="Encode"/> of <paramref name="length"/> bytes with any codec of the table.</summary>
    public static int ScratchSize(int length) => Math.Max(length, All.Max(c => c.Bound(length)));

    /// <summary>Decodes a compressed body into exactly <paramref name="target"/>.Length bytes.</summary>
    public static void Decode(DataEncoding encoding, ReadOnlySpan<byte> body, Span<byte> target)
    {
        var c = Of(encoding) ?? throw new ProtocolException($"{encoding} is not a compressed encoding");
        var n = c._decode(body, target);
        if (n != target.Length) throw new ProtocolException($"{encoding} body decodes to {(n < 0 ? "nothing (corrupt)" : n + " bytes")}, expected {target.Length}");
    }
}
