using System.CommandLine;
using System.Globalization;

namespace BlockMigrate.Cli.Config;

/// <summary>
/// One option of a command, declared once: its flag, its config-file key (global, or in a section such
/// as <c>[hypervisor qemu]</c>), its default and its help. The help text shown by <c>--help</c> is
/// built from the declaration ("... (default 300)"), the config file's known keys are the declared
/// ones, and a value is parsed by the same parser whether it came from the flag or the file
/// (<see cref="Binder"/>). A value that does not parse is a usage error (exit 2), one line.
/// </summary>
public abstract class Setting
{
    protected Setting(string flag, string? key, string? section, string help, string? defaultText)
    {
        Flag = flag;
        Key = key;
        Section = section;
        Help = help;
        DefaultText = defaultText;
    }

    /// <summary>"--max-downtime".</summary>
    public string Flag { get; }

    /// <summary>The config file's key ("max-downtime"); null for a flag the file cannot set (<c>--json</c>).</summary>
    public string? Key { get; }

    /// <summary>The section kind the key lives in (<c>hypervisor</c>, <c>network</c>); null for the global part.</summary>
    public string? Section { get; }

    public string Help { get; }

    /// <summary>The default as --help and the man page say it; null when there is none to state.</summary>
    public string? DefaultText { get; }

    /// <summary>The --help line: the help, then "(default X)" when there is one.</summary>
    public string Description => DefaultText is null ? Help : $"{Help} (default {DefaultText})";

    /// <summary>The System.CommandLine option; values are taken as text and parsed by the setting.</summary>
    public abstract Option Option { get; }

    /// <summary>The bound value, boxed (<see cref="Binder.Get{T}"/> for code that does not know T: tests, listings).</summary>
    internal abstract object? BoxedValue(Binder b, IReadOnlyDictionary<string, string>? section);

    /// <summary>The default, boxed.</summary>
    internal abstract object? BoxedDefault { get; }

    /// <summary>"--flag 'value'" or "FILE: key = value": where a bad value came from, for its message.</summary>
    internal static string Origin(Setting s, string? file, string value, bool fromFlag) =>
        fromFlag ? $"{s.Flag} '{value}'" : $"{(string.IsNullOrEmpty(file) ? "config" : file)}: {s.Key} = {value}";

    // ---- parsers shared by the declarations: each returns the value or throws FormatException(why) ----

    public static int Int(string text, int min = int.MinValue, int max = int.MaxValue) =>
        int.TryParse(text.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) && n >= min && n <= max ? n
        : throw new FormatException(min == int.MinValue && max == int.MaxValue ? "not a number"
            : max == int.MaxValue ? $"expected a whole number from {min}" : $"expected a whole number from {min} to {max}");

    public static double Number(string text, double min, double max) =>
        double.TryParse(text.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var n) && n >= min && n <= max ? n
        : throw new FormatException($"expected a number from {min.ToString(CultureInfo.InvariantCulture)} to {max.ToString(CultureInfo.InvariantCulture)}");

    public static bool Bool(string text) => text.Trim().ToLowerInvariant() switch
    {
        "true" or "yes" or "1" => true,
        "false" or "no" or "0" => false,
        _ => throw new FormatException("expected true or false"),
    };

    /// <summary>One of <paramref name="choices"/> (as written); the message lists them as "a, b or c".</summary>
    public static string OneOf(string text, IReadOnlyList<string> choices) =>
        choices.Contains(text) ? text : throw new FormatException($"expected {Words.Or(choices)}");
}

/// <summary>A setting with a value: <c>--flag VALUE</c> or <c>key = VALUE</c>, else <see cref="Default"/>.</summary>
public sealed class Setting<T> : Setting
{
    private readonly Func<string, T> _parse;
    private readonly Option<string?> _option;

    /// <param name="parse">Text to value; throws <see cref="FormatException"/> (or <see cref="BlockMigrateException"/>) saying what was expected.</param>
    /// <param name="defaultText">How help states <paramref name="default"/>; null: not stated (e.g. "none" defaults that the help explains).</param>
    /// <param name="choices">Values --help and shell completion offer (and the only ones System.CommandLine accepts for the flag).</param>
    public Setting(string flag, string? key, string help, Func<string, T> parse, T @default, string? defaultText = null,
        string? section = null, IReadOnlyList<string>? choices = null, string? valueName = null)
        : base(flag, key, section, help, defaultText)
    {
        _parse = parse;
        Default = @default;
        // choices are checked by parse (one message for flag and file alike); help shows them
        _option = new Option<string?>(flag) { Description = Description, HelpName = valueName ?? (choices is null ? null : string.Join("|", choices)) };
    }

    public T Default { get; }

    public override Option Option => _option;

    internal override object? BoxedValue(Binder b, IReadOnlyDictionary<string, string>? section) => b.Get(this, section);

    internal override object? BoxedDefault => Default;

    internal Option<string?> Typed => _option;

    /// <summary>Parses <paramref name="text"/> (from <paramref name="origin"/>); a bad value is a <see cref="Commands.UsageException"/>.</summary>
    internal T Parse(string text, string origin)
    {
        try
        {
            return _parse(text);
        }
        catch (FormatException e)
        {
            throw new Commands.UsageException($"{origin}: {e.Message}");
        }
        catch (OverflowException)
        {
            throw new Commands.UsageException($"{origin}: out of range");
        }
        catch (BlockMigrateException e)
        {
            // the shared parsers (rates, endpoints) say what they expected in their own words; say where from unless they do
            throw new Commands.UsageException(e.Message.Contains(Flag) ? e.Message : $"{origin}: {e.Message}");
        }
    }
}

/// <summary>A switch: <c>--flag</c> (no value), or <c>key = true|false</c> in the file; off by default.</summary>
public sealed class Switch : Setting
{
    private readonly Option<bool> _option;

    public Switch(string flag, string? key, string help, string? section = null) : base(flag, key, section, help, null) =>
        _option = new Option<bool>(flag) { Description = help };

    public override Option Option => _option;

    internal Option<bool> Typed => _option;

    internal override object? BoxedValue(Binder b, IReadOnlyDictionary<string, string>? section) => b.Get(this, section);

    internal override object? BoxedDefault => false;
}

/// <summary>
/// A list: <c>--flag VALUE</c> any number of times (each may also be comma-separated), or
/// <c>key = V1, V2</c> in the file; flags given replace the file's list. Empty by default.
/// </summary>
public sealed class ListSetting : Setting
{
    private readonly Option<string[]> _option;

    public ListSetting(string flag, string? key, string help, string? valueName = null, string? section = null) : base(flag, key, section, help, null) =>
        _option = new Option<string[]>(flag) { Description = help, HelpName = valueName, AllowMultipleArgumentsPerToken = false };

    public override Option Option => _option;

    internal Option<string[]> Typed => _option;

    internal override object? BoxedValue(Binder b, IReadOnlyDictionary<string, string>? section) => b.Get(this, section);

    internal override object? BoxedDefault => Array.Empty<string>();

    /// <summary>The comma-separated items of <paramref name="text"/>, trimmed, empty ones dropped.</summary>
    public static IEnumerable<string> Split(string text) => text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
}

/// <summary>Lists in prose.</summary>
public static class Words
{
    /// <summary>"a", "a or b", "a, b or c".</summary>
    public static string Or(IReadOnlyList<string> items) =>
        items.Count <= 1 ? string.Concat(items) : $"{string.Join(", ", items.Take(items.Count - 1))} or {items[^1]}";
}
