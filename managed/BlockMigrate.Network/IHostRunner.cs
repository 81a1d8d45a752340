namespace BlockMigrate.Network;

/// <summary>
/// Runs a command on one host as root: the source host (normally locally), the destination host (for the
/// far end of the tunnel; in production through ssh) or wherever nsupdate should run. Tests target a
/// network namespace with "ip netns exec NAME". A runner never throws for a failing command; it returns
/// the exit code and output. Cancellation kills the command and throws.
/// </summary>
public interface IHostRunner
{
    /// <summary>How commands are run, for messages, e.g. "local" or "ssh root@dst".</summary>
    string Description { get; }

    /// <summary>Run <paramref name="program"/> with <paramref name="arguments"/>, feeding
    /// <paramref name="standardInput"/> if not null.</summary>
    Task<HostCommandResult> RunAsync(string program, IReadOnlyList<string> arguments, string? standardInput,
        CancellationToken cancellationToken);
}
