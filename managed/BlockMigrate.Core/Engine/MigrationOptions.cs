namespace BlockMigrate.Engine;

/// <summary>Everything <see cref="Migration"/> needs; the CLI fills it from flags or a VM file.</summary>
public sealed record MigrationOptions
{
    public const int DefaultPort = 7420;

    public required IReadOnlyList<DiskSpec> Disks { get; init; }
    public required string Host { get; init; }
    public int Port { get; init; } = DefaultPort;
    /// <summary>Our key (PEM); required unless <see cref="Plaintext"/>.</summary>
    public string? KeyPath { get; init; }
    /// <summary>The receiver's pinned key fingerprint (SHA256:...); required unless <see cref="Plaintext"/>.</summary>
    public string? PeerFingerprint { get; init; }
    public bool Plaintext { get; init; }
    /// <summary>Cap on the bytes per second put on the socket; null = no cap.</summary>
    public double? BandwidthBytesPerSecond { get; init; }
    public TimeSpan MaxDowntime { get; init; } = TimeSpan.FromMilliseconds(300);
    /// <summary>Dirty rounds after the bulk copy before giving up with "did not converge".</summary>
    public int MaxRounds { get; init; } = 30;
    /// <summary>Throttle the guest's writes when they outrun the link (off only to show that it is needed).</summary>
    public bool Throttle { get; init; } = true;
    public bool Compress { get; init; } = true;
    /// <summary>Compression of data when <see cref="Compress"/>: by link rate (default), or always LZ4 or zstd.</summary>
    public CodecChoice Codec { get; init; } = CodecChoice.Auto;
    /// <summary>When the destination VM may resume: once the final set is gated there (default), or after the commit.</summary>
    public SwitchoverMode Switchover { get; init; } = SwitchoverMode.Gate;
    /// <summary>After the commit, hash every image on both sides while the source is still frozen (implies <see cref="SwitchoverMode.Commit"/>).</summary>
    public bool Verify { get; init; }
    /// <summary>With no hypervisor: leave the source frozen after the commit instead of thawing it.</summary>
    public bool KeepSourceFrozen { get; init; }
    /// <summary>
    /// From the TCP connect to the receiver's Welcome, at most: a receiver that accepts the connection
    /// and then says nothing (no opening answer, no TLS handshake, no Welcome) is given up on with an error.
    /// </summary>
    public TimeSpan ConnectTimeout { get; init; } = DefaultConnectTimeout;
    public static readonly TimeSpan DefaultConnectTimeout = TimeSpan.FromSeconds(30);
    /// <summary>Record a <see cref="Timeline"/> (sampled every 100 ms) into the report's <see cref="MigrationReport.Timeline"/>.</summary>
    public bool RecordTimeline { get; init; }
    /// <summary>Whole-migration deadline; null = none.</summary>
    public TimeSpan? Timeout { get; init; }
    /// <summary>Fail when frames are in flight and nothing is acknowledged for this long.</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>How long the freeze may wait for writes in flight to drain.</summary>
    public TimeSpan FreezeTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Bytes sent and not yet acknowledged, at most (fills a long fat pipe: 32 MiB ≈ 1 Gbit/s × 250 ms).</summary>
    public long WindowBytes { get; init; } = 32L << 20;

    /// <summary>Every problem, one line each, named as the CLI's options (none: usable).</summary>
    public IReadOnlyList<string> Validate()
    {
        var e = new List<string>();
        if (Port is < 1 or > 65535) e.Add($"port {Port}: expected 1 to 65535");
        if (BandwidthBytesPerSecond is { } bw && !(bw > 0)) e.Add("--bandwidth: expected a positive rate");
        if (MaxDowntime <= TimeSpan.Zero) e.Add($"--max-downtime {MaxDowntime.TotalMilliseconds:0}: expected a positive number of ms");
        if (MaxRounds < 1) e.Add($"--max-rounds {MaxRounds}: expected at least 1");
        if (ConnectTimeout <= TimeSpan.Zero) e.Add("--connect-timeout: expected a positive number of seconds");
        if (Timeout is { } t && t <= TimeSpan.Zero) e.Add($"--timeout {t.TotalSeconds:0}: expected a positive number of seconds");
        if (!Plaintext && PeerFingerprint is null)
            e.Add($"receiver {Host}:{Port} has no pinned key: give --peer-fingerprint or list it in --known-hosts");
        return e;
    }
}
