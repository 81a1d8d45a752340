namespace BlockMigrate.Cli.Config;

/// <summary>
/// A <c>key = value</c> file with optional <c>[section NAME]</c> or <c>[section]</c> headers (e.g. <c>[disk vda]</c>, <c>[network]</c>).
/// '#' starts a comment line; keys are lower-case with dashes, as the flags they stand for (<see cref="Setting.Key"/>).
/// A file that cannot be read or parsed is a usage error (exit 2).
/// </summary>
public sealed class KeyValueFile
{
    public Dictionary<string, string> Global { get; } = new(StringComparer.OrdinalIgnoreCase);
    public List<(string Kind, string Name, Dictionary<string, string> Values)> Sections { get; } = [];

    public static KeyValueFile Load(string path)
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new Commands.UsageException($"cannot read config file {path}: {e.Message}");
        }
        var file = new KeyValueFile();
        var current = file.Global;
        for (var i = 0; i < lines.Length; i++)
        {
            var t = lines[i].Trim();
            if (t.Length == 0 || t.StartsWith('#')) continue;
            if (t.StartsWith('[') && t.EndsWith(']'))
            {
                var parts = t[1..^1].Split((char[]?)null, 2, StringSplitOptions.RemoveEmptyEntries);
                if (parts.Length == 0) throw new Commands.UsageException($"{path}:{i + 1}: expected a section like [disk NAME] or [network]");
                current = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
                file.Sections.Add((parts[0].ToLowerInvariant(), parts.Length == 2 ? parts[1] : "", current));
                continue;
            }
            var eq = t.IndexOf('=');
            if (eq <= 0) throw new Commands.UsageException($"{path}:{i + 1}: expected 'key = value'");
            current[t[..eq].Trim()] = t[(eq + 1)..].Trim();
        }
        return file;
    }
}
