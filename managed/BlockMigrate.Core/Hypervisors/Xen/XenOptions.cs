namespace BlockMigrate.Hypervisors.Xen;

/// <summary>
/// How to drive Xen's <c>xl</c> toolstack for one domain. <c>xl</c> runs locally on the source dom0;
/// commands for the destination dom0 run through <see cref="RemoteCommand"/> (ssh by default).
/// </summary>
public sealed record XenOptions
{
    /// <summary>The domain's name (<c>--xen-domain</c>).</summary>
    public required string Domain { get; init; }

    /// <summary>The destination dom0, as <c>xl migrate</c> and ssh take it (<c>--xen-host</c>).</summary>
    public required string DestinationHost { get; init; }

    /// <summary>The <c>xl</c> executable on the source (<c>--xl</c>).</summary>
    public string XlPath { get; init; } = "xl";

    /// <summary>The <c>xl</c> executable on the destination, as the remote shell finds it.</summary>
    public string RemoteXlPath { get; init; } = "xl";

    /// <summary>
    /// <c>xl migrate -s</c>: the command xl uses to reach the destination instead of plain <c>ssh</c>
    /// (<c>--xen-ssh</c>, e.g. <c>"ssh -p 2222 -i /root/.ssh/migrate"</c>); null leaves xl's default.
    /// </summary>
    public string? SshCommand { get; init; }

    /// <summary>
    /// Program and arguments that run a command on the destination dom0; the xl command line is
    /// appended. Null = <see cref="SshCommand"/> (split on spaces, no quoting) or <c>ssh</c>, then the host.
    /// </summary>
    public IReadOnlyList<string>? RemoteCommand { get; init; }

    /// <summary><c>xl migrate -C</c>: a domain config file to send instead of the one the domain was created with.</summary>
    public string? ConfigFile { get; init; }

    /// <summary>Time allowed for one short xl command (list, unpause, destroy).</summary>
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>The remote command prefix: <see cref="RemoteCommand"/>, else the ssh that xl migrate uses, then the host.</summary>
    internal IReadOnlyList<string> Remote => RemoteCommand ??
        (string.IsNullOrWhiteSpace(SshCommand)
            ? ["ssh", DestinationHost]
            : [.. SshCommand.Split(' ', StringSplitOptions.RemoveEmptyEntries), DestinationHost]);
}
