using System.CommandLine;
using BlockMigrate.Cli.Commands;

namespace BlockMigrate.Cli.Config;

/// <summary>
/// The one way a command's options are bound: for each <see cref="Setting"/>, the flag if given, else
/// its key in the config file (the global part, or the section passed), else its default; each value
/// through the setting's own parser. Every problem is a <see cref="UsageException"/> (exit 2, one line):
/// a value that does not parse, a key no setting declares, a config file that cannot be read.
/// </summary>
public sealed class Binder
{
    private readonly ParseResult _parse;

    public Binder(ParseResult parse, Option<string?>? config)
    {
        _parse = parse;
        FileName = config is null ? "" : parse.GetValue(config) ?? "";
        File = FileName.Length > 0 ? KeyValueFile.Load(FileName) : new KeyValueFile();
    }

    /// <summary>The parsed command line (for options that are not settings, such as repeatable ones).</summary>
    public ParseResult Parse => _parse;

    /// <summary>The config file (empty when none was given).</summary>
    public KeyValueFile File { get; }

    /// <summary>Its path as given ("" when none).</summary>
    public string FileName { get; }

    private IReadOnlyDictionary<string, string> Values(IReadOnlyDictionary<string, string>? section) => section ?? File.Global;

    /// <summary>The value of <paramref name="s"/>: flag, else file (global, or <paramref name="section"/>), else default.</summary>
    public T Get<T>(Setting<T> s, IReadOnlyDictionary<string, string>? section = null)
    {
        if (_parse.GetValue(s.Typed) is { } flag) return s.Parse(flag, Setting.Origin(s, FileName, flag, fromFlag: true));
        if (s.Key != null && Values(section).TryGetValue(s.Key, out var text))
            return s.Parse(text, Setting.Origin(s, FileName, text, fromFlag: false));
        return s.Default;
    }

    /// <summary>The list: the flags given (each comma-separated too), else the file's comma-separated value, else empty.</summary>
    public IReadOnlyList<string> Get(ListSetting s, IReadOnlyDictionary<string, string>? section = null)
    {
        if (_parse.GetValue(s.Typed) is { Length: > 0 } flags) return flags.SelectMany(ListSetting.Split).ToList();
        if (s.Key != null && Values(section).TryGetValue(s.Key, out var text)) return ListSetting.Split(text).ToList();
        return [];
    }

    /// <summary>The switch: given as a flag, or <c>key = true</c> in the file.</summary>
    public bool Get(Switch s, IReadOnlyDictionary<string, string>? section = null)
    {
        if (_parse.GetValue(s.Typed)) return true;
        if (s.Key == null || !Values(section).TryGetValue(s.Key, out var text)) return false;
        try
        {
            return Setting.Bool(text);
        }
        catch (FormatException e)
        {
            throw new UsageException($"{Setting.Origin(s, FileName, text, fromFlag: false)}: {e.Message}");
        }
    }

    /// <summary>Was the flag given on the command line (not merely defaulted)?</summary>
    public bool IsGiven(Setting s) => _parse.GetResult(s.Option) is { Implicit: false };

    /// <summary>
    /// Refuses a key of <paramref name="values"/> that none of <paramref name="settings"/> (nor
    /// <paramref name="extraKeys"/>) declares, naming the known ones.
    /// </summary>
    public void CheckKeys(IReadOnlyDictionary<string, string> values, IEnumerable<Setting> settings, string? where = null, params string[] extraKeys) =>
        CheckKeys(FileName, values, [.. settings.Select(s => s.Key).OfType<string>(), .. extraKeys], where);

    /// <summary>Refuses a key of <paramref name="values"/> not in <paramref name="known"/>: a usage error naming the known ones.</summary>
    public static void CheckKeys(string fileName, IReadOnlyDictionary<string, string> values, IReadOnlyList<string> known, string? where = null)
    {
        foreach (var k in values.Keys)
            if (!known.Contains(k, StringComparer.OrdinalIgnoreCase))
                throw new UsageException($"{fileName}: {(where is null ? "" : where + ": ")}unknown key '{k}' (known: {string.Join(", ", known)})");
    }
}
