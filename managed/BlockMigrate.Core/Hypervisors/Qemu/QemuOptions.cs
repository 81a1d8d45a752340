namespace BlockMigrate.Hypervisors.Qemu;

/// <summary>
/// How to reach the two QEMUs of a migration and how to tune QEMU's memory migration.
/// The destination QEMU must have been started with <c>-incoming defer</c> (and <c>-S</c>), its disk
/// served by the destination shim in gate mode.
/// </summary>
public sealed record QemuOptions
{
    /// <summary>The source QEMU's monitor: a unix socket path or <c>tcp:HOST:PORT</c> (<c>--qmp-source</c>).</summary>
    public required string SourceQmp { get; init; }

    /// <summary>The destination QEMU's monitor (<c>--qmp-destination</c>).</summary>
    public required string DestinationQmp { get; init; }

    /// <summary>
    /// Where the source sends the memory stream (QEMU URI: <c>tcp:HOST:PORT</c>, <c>unix:PATH</c>)
    /// (<c>--migration-uri</c>). The destination listens on <see cref="IncomingUri"/>, by default the same.
    /// </summary>
    public required string MigrationUri { get; init; }

    /// <summary>What the destination listens on (<c>migrate-incoming</c>), e.g. <c>tcp:0.0.0.0:4444</c>; null = <see cref="MigrationUri"/>.</summary>
    public string? IncomingUri { get; init; }

    /// <summary>Send <c>migrate-incoming</c> to the destination in Prepare (false if the admin already did).</summary>
    public bool StartIncoming { get; init; } = true;

    /// <summary>QEMU's own defaults (7.2): what a null <see cref="MaxBandwidth"/> or <see cref="DowntimeLimit"/> sets.</summary>
    public const long QemuDefaultMaxBandwidth = 128L << 20;
    public static readonly TimeSpan QemuDefaultDowntimeLimit = TimeSpan.FromMilliseconds(300);

    /// <summary>QEMU's <c>max-bandwidth</c> for memory, bytes per second; null sets QEMU's default, 128 MiB/s (<c>--memory-bandwidth</c>).</summary>
    public long? MaxBandwidth { get; init; }

    /// <summary>QEMU's <c>downtime-limit</c>: the pause it aims for when it stops the source; null sets QEMU's default (300 ms).</summary>
    public TimeSpan? DowntimeLimit { get; init; }

    /// <summary>
    /// Several memory channels with compression, for slow links (<c>--multifd</c>). Both QEMUs must
    /// support it; Prepare sets it on both sides and fails before anything starts if one cannot.
    /// </summary>
    public bool Multifd { get; init; }

    /// <summary>Number of multifd channels (QEMU's default is 2).</summary>
    public int MultifdChannels { get; init; } = 2;

    /// <summary>multifd compression: one of <see cref="MultifdCompressions"/> (<c>--memory-compression</c>).</summary>
    public string MultifdCompression { get; init; } = "zstd";

    /// <summary>What QEMU's multifd-compression takes.</summary>
    public static readonly IReadOnlyList<string> MultifdCompressions = ["none", "zlib", "zstd"];

    /// <summary>
    /// QEMU's <c>auto-converge</c>: slow the guest's vCPUs down while its memory is dirtied faster than
    /// the link drains it, so the memory copy always ends, as the shim's throttle does for the disk
    /// (<c>--auto-converge</c>).
    /// </summary>
    public bool AutoConverge { get; init; }

    /// <summary>
    /// QEMU post-copy for memory (<c>--postcopy</c>): <c>postcopy-ram</c> on both QEMUs, and
    /// <c>migrate-start-postcopy</c> once the first pass over memory is done (QEMU's second dirty-bitmap
    /// sync), unless the pre-copy has converged by then. The source still stops in <c>pre-switchover</c>
    /// for the disks' hand-over; the destination then resumes as soon as it has the device state and
    /// pulls the pages still missing from the source. Past that point a broken link or a dead QEMU
    /// loses the VM (neither side has all of its memory); docs/hypervisors.md. Not with <see cref="Multifd"/>.
    /// </summary>
    public bool Postcopy { get; init; }

    /// <summary>
    /// Send the memory stream without TLS (<c>--memory-plaintext</c>). By default both QEMUs encrypt and
    /// authenticate it with TLS under a pre-shared key made for this migration (QEMU <c>tls-creds-psk</c>),
    /// which the engine delivers to the receiver inside the pinned channel
    /// (<see cref="IHypervisor.MemoryKey"/>); the adapter refuses to migrate until it has been delivered.
    /// </summary>
    public bool MemoryPlaintext { get; init; }

    /// <summary>How long to retry connecting to a monitor that is not there yet.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Why --postcopy and --multifd are refused together (seen here, QEMU 7.2.22; docs/hypervisors.md).</summary>
    internal const string PostcopyWithMultifd =
        "qemu: --postcopy cannot be combined with --multifd: QEMU 7.2 accepts both, but its destination aborts when post-copy starts " +
        "(assertion in yank_unregister_instance), and newer QEMUs refuse the pair ('Postcopy is not yet compatible with multifd'); drop one of them";

    /// <summary>
    /// Every problem, one line each (none: usable). The one check of these settings: the CLI turns the
    /// lines into a usage error, <see cref="QemuHypervisor"/> refuses options that fail it.
    /// </summary>
    public IReadOnlyList<string> Validate()
    {
        var e = new List<string>();
        if (!MultifdCompressions.Contains(MultifdCompression))
            e.Add($"qemu: memory compression '{MultifdCompression}': use none, zlib or zstd");
        if (MultifdChannels is < 1 or > 255)
            e.Add($"qemu: {MultifdChannels} multifd channels: use 1 to 255");
        if (Postcopy && Multifd)
            e.Add(PostcopyWithMultifd);
        if (DowntimeLimit is { } d && d <= TimeSpan.Zero)
            e.Add($"qemu: downtime limit {d.TotalMilliseconds:0} ms: a positive number of ms");
        if (MaxBandwidth is <= 0)
            e.Add($"qemu: memory bandwidth {MaxBandwidth}: a positive number of bytes per second");
        foreach (var uri in new[] { MigrationUri, IncomingUri })
            if (uri != null && !(uri.StartsWith("tcp:", StringComparison.Ordinal) || uri.StartsWith("unix:", StringComparison.Ordinal)))
                e.Add($"qemu: migration URI '{uri}': use tcp:HOST:PORT or unix:PATH");
        return e;
    }
}
