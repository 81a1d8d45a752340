using System.Text;

namespace BlockMigrate.Protocol;

/// <summary>
/// Text from the peer (its Error line, its refusal) made safe to log or show: decoded as UTF-8 (invalid
/// bytes become U+FFFD), every control character (C0, DEL, C1: newlines, escapes) and every Unicode
/// line separator or bidirectional override replaced by '?', cut at <see cref="MaxChars"/> characters.
/// A peer can then never forge a log line, move the cursor or flood the journal.
/// </summary>
public static class PeerText
{
    public const int MaxChars = 300;

    public static string Clean(ReadOnlySpan<byte> utf8)
    {
        // at most 4 bytes per character: more cannot show, and a 2 MiB payload is not decoded whole
        var head = utf8[..Math.Min(utf8.Length, MaxChars * 4 + 4)];
        var text = Clean(Encoding.UTF8.GetString(head));
        return head.Length < utf8.Length && !text.EndsWith(" [cut]", StringComparison.Ordinal) ? text + " [cut]" : text;
    }

    public static string Clean(string text)
    {
        var cut = text.Length > MaxChars;
        var b = new StringBuilder(Math.Min(text.Length, MaxChars) + 8);
        foreach (var c in cut ? text.AsSpan(0, MaxChars) : text.AsSpan())
            b.Append(IsUnsafe(c) ? '?' : c);
        var s = b.ToString().Trim();
        return cut ? s + " [cut]" : s;
    }

    private static bool IsUnsafe(char c) =>
        char.IsControl(c)                       // C0 (\n, \r, ESC...), DEL, C1
        || c is '\u2028' or '\u2029' or '\u0085' // line and paragraph separators
        || c is >= '\u202A' and <= '\u202E'     // bidirectional embeddings and overrides
        || c is >= '\u2066' and <= '\u2069'     // bidirectional isolates
        || c is '\u200E' or '\u200F' or '\u061C'; // direction marks
}
