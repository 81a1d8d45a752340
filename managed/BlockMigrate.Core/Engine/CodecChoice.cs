using BlockMigrate.Protocol;

namespace BlockMigrate.Engine;

/// <summary>
/// Which compression the engine uses for data (<see cref="MigrationOptions.Codec"/>): <see cref="Auto"/>, or
/// always one codec of the table (<see cref="BlockCodec.All"/>). Auto starts with zstd; keeps it while the
/// link is the bottleneck (socket rate ≤ 40 MB/s), LZ4 when the CPU or disk is, or on faster links
/// (<see cref="CodecPolicy"/>).
/// </summary>
public readonly record struct CodecChoice
{
    private CodecChoice(BlockCodec? fixedCodec) => Fixed = fixedCodec;

    /// <summary>The codec always used; null for <see cref="Auto"/>.</summary>
    public BlockCodec? Fixed { get; }

    public bool IsAuto => Fixed is null;

    public static CodecChoice Auto => default;

    public static CodecChoice Always(BlockCodec codec) => new(codec);

    public const string AutoName = "auto";

    /// <summary>What <c>--codec</c> and the config key <c>codec</c> take: auto, then the table's names.</summary>
    public static IReadOnlyList<string> Names { get; } = [AutoName, .. BlockCodec.All.Select(c => c.Name)];

    /// <summary>"auto, lz4 or zstd": <see cref="Names"/> for help texts and errors.</summary>
    public static string NamesText => $"{string.Join(", ", Names.Take(Names.Count - 1))} or {Names[^1]}";

    /// <summary>The choice named <paramref name="name"/> (one of <see cref="Names"/>); null if none.</summary>
    public static CodecChoice? Parse(string name) =>
        name == AutoName ? Auto : BlockCodec.Named(name) is { } c ? Always(c) : null;

    public override string ToString() => Fixed?.Name ?? AutoName;
}
