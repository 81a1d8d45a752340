namespace BlockMigrate.Cli.Commands;

/// <summary>Human-readable sizes for terminal output (binary units, as qemu-img prints them).</summary>
public static class Units
{
    public static string Bytes(double n)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        var u = 0;
        while (n >= 1024 && u < units.Length - 1) { n /= 1024; u++; }
        return u == 0 ? $"{n:0} B" : $"{n:0.#} {units[u]}";
    }
}
