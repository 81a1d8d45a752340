using BlockMigrate.TestSupport;

namespace BlockMigrate.Bench.Qemu;

/// <summary>Bytes through a namespace's eth0, both directions (from <c>ip -s -o link</c>).</summary>
public static class WireCounter
{
    public static async Task<long> BytesAsync(string ns)
    {
        var r = await Tool.RunAsync("ip", ["-n", ns, "-s", "-o", "link", "show", "eth0"]);
        if (r.ExitCode != 0)
            throw new InvalidOperationException("ip -s link: " + r.StandardError);
        // "... RX:  bytes packets ... \    123 4 ... \    TX:  bytes packets ... \    567 8 ..."
        var f = r.StandardOutput.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return Counter(f, "RX:") + Counter(f, "TX:");
    }

    private static long Counter(string[] fields, string label)
    {
        var at = Array.IndexOf(fields, label);
        var backslash = Array.IndexOf(fields, "\\", at);
        return long.Parse(fields[backslash + 1]);
    }
}
