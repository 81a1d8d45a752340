namespace BlockMigrate.Network.Tests;

/// <summary>
/// A host's network configuration as text: links, addresses, routes of every table, rules, nft ruleset.
/// The test's simulated VM port (<see cref="TestNetwork.VmPort"/>) moves from host to host during a
/// migration; lines about it are the only ones left out.
/// </summary>
internal static class HostSnapshot
{
    public static async Task<string> TakeAsync(string ns, CancellationToken ct)
    {
        // IPv6 duplicate address detection marks new addresses "tentative" for a moment: wait it out.
        for (int i = 0; i < 50 && (await Sh.RunAsync("ip -o addr show", ns, ct)).Contains("tentative", StringComparison.Ordinal); i++)
            await Task.Delay(100, ct);
        var parts = new List<string>();
        foreach (var cmd in new[]
        {
            "ip -o link show", "ip -o addr show", "ip route show table all", "ip -6 route show table all",
            "ip rule show", "ip -6 rule show", "nft list ruleset",
        })
        {
            var output = await Sh.RunAsync(cmd, ns, ct);
            var lines = output.Split('\n').Where(l => !l.Contains($" {TestNetwork.VmPort}", StringComparison.Ordinal)
                                                      && !l.Contains($"{TestNetwork.VmPort}@", StringComparison.Ordinal));
            parts.Add($"## {cmd}\n{string.Join('\n', lines)}");
        }
        return string.Join('\n', parts);
    }
}
