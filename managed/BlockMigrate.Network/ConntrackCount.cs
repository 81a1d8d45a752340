namespace BlockMigrate.Network;

/// <summary>
/// Counts live connections in `conntrack -L` output. A TCP entry is live unless it is in TIME_WAIT or
/// CLOSE (both ends are done with it); a UDP entry is live once [ASSURED] (traffic both ways); other
/// protocols (ICMP) do not keep the tunnel up.
/// </summary>
internal static class ConntrackCount
{
    public static int Live(string conntrackOutput)
    {
        int n = 0;
        foreach (var raw in conntrackOutput.Split('\n'))
        {
            var f = raw.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 4) continue;
            if (f[0] == "tcp")
            {
                if (f[3] is not ("TIME_WAIT" or "CLOSE") && !f[3].Contains('=')) n++;
            }
            else if (f[0] == "udp" && raw.Contains("[ASSURED]")) n++;
        }
        return n;
    }
}
