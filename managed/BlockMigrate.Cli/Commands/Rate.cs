using System.Globalization;
using System.Text.RegularExpressions;

namespace BlockMigrate.Cli.Commands;

/// <summary>Link rates as tc writes them: bits per second, with k/M/G = 10^3/10^6/10^9 ("20M", "100mbit", "1.5G").</summary>
public static partial class Rate
{
    [GeneratedRegex(@"^(\d+(?:\.\d+)?)\s*([kmg]?)(?:bit|bps|b)?$", RegexOptions.IgnoreCase)]
    private static partial Regex Pattern();

    /// <summary>Returns bytes per second.</summary>
    public static double ParseBitsPerSecond(string text)
    {
        var m = Pattern().Match(text.Trim());
        if (!m.Success) throw new BlockMigrateException($"bad rate '{text}': expected bits per second like 20M, 100mbit or 1G");
        var bits = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) * (m.Groups[2].Value.ToLowerInvariant() switch
        {
            "k" => 1e3,
            "m" => 1e6,
            "g" => 1e9,
            _ => 1,
        });
        if (!double.IsFinite(bits)) throw new BlockMigrateException($"bad rate '{text}': too large");
        if (bits < 8000) throw new BlockMigrateException($"rate '{text}' is below 8 kbit/s");
        return bits / 8;
    }
}
