using System.Text.RegularExpressions;

namespace BlockMigrate.Receiver;

/// <summary>
/// A disk's name becomes a file name in the image directory, so it is checked before any use:
/// [A-Za-z0-9][A-Za-z0-9._-]*, at most 64 characters, never "..": no separators, no way out.
/// </summary>
public static partial class DiskName
{
    [GeneratedRegex(@"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\z")] // \z: "$" would accept a trailing newline
    private static partial Regex Pattern();

    public static bool IsValid(string name) => Pattern().IsMatch(name) && !name.Contains("..");

    public static void Check(string name)
    {
        if (!IsValid(name))
            throw new ReceiverException($"refused disk name '{Printable(name)}': names are [A-Za-z0-9][A-Za-z0-9._-]*, at most 64 characters, without '..'");
    }

    public static string ImageFile(string name) => name + ".img";
    public static string StateFile(string name) => name + ".img.blockmigrate-state";

    private static string Printable(string s) =>
        new(s.Take(80).Select(c => char.IsControl(c) ? '?' : c).ToArray());
}
