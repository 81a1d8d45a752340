namespace BlockMigrate.Network;

/// <summary>What one command on a host returned. <see cref="ExitCode"/> is -1 when it could not be started
/// or timed out (the reason is in <see cref="StandardError"/>).</summary>
public sealed record HostCommandResult(string CommandLine, int ExitCode, string StandardOutput, string StandardError)
{
    /// <summary>Exit code 0.</summary>
    public bool Succeeded => ExitCode == 0;

    /// <summary>The first non-empty line of stderr (or stdout), for one-line error messages.</summary>
    public string FirstErrorLine
    {
        get
        {
            foreach (var text in new[] { StandardError, StandardOutput })
                foreach (var line in text.Split('\n'))
                    if (line.Trim() is { Length: > 0 } l) return l;
            return $"exit code {ExitCode}";
        }
    }
}
