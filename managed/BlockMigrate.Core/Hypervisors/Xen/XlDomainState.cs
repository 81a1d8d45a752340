namespace BlockMigrate.Hypervisors.Xen;

/// <summary>One line of <c>xl list DOMAIN</c>: the name, and the six state flags (r b p s c d).</summary>
internal sealed record XlDomainState(string Name, string Flags)
{
    public bool Paused => Flags.Contains('p');
    public bool Suspended => Flags.Contains('s');
    public bool Dying => Flags.Contains('c') || Flags.Contains('d');

    /// <summary>Parses the output of <c>xl list DOMAIN</c> (a header, then one line per domain).</summary>
    public static XlDomainState? Parse(string output, string domain)
    {
        foreach (var line in output.Split('\n'))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            // Name ID Mem VCPUs State Time(s)
            if (f.Length >= 6 && f[0] == domain)
                return new XlDomainState(f[0], f[4]);
        }
        return null;
    }
}
