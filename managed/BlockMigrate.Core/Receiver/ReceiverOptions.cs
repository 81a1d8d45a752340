using System.Net;

namespace BlockMigrate.Receiver;

/// <summary>The receiver's configuration (flags or a <c>key = value</c> file, see docs/engine.md).</summary>
public sealed record ReceiverOptions
{
    public IPEndPoint Listen { get; init; } = new(IPAddress.Any, Engine.MigrationOptions.DefaultPort);
    public required string ImageDir { get; init; }
    public string? KeyPath { get; init; }
    public string? TrustedPath { get; init; }
    public bool Plaintext { get; init; }
    /// <summary>Exit after one migration (committed or not); only an authenticated source's migration counts.</summary>
    public bool Once { get; init; }
    /// <summary>Where destination shims keep their maps (NAME.map); a disk whose map exists there is gated.</summary>
    public string GateMapDir { get; init; } = "/dev/shm/blockmigrate";
    /// <summary>A connection idle this long (nothing received) is dropped.</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(120);
    /// <summary>
    /// Let a fresh copy replace an image that is handed over, committed, gated or foreign (exists with
    /// data and no state file). Off by default: such an image may be a running VM's disk.
    /// </summary>
    public bool Overwrite { get; init; }
    /// <summary>The image directory's storage (tests substitute one that injects faults); null: the real one.</summary>
    internal IReceiverStorage? Storage { get; init; }
    /// <summary>A connection not authenticated within this time (opening + TLS handshake) is closed.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = DefaultHandshakeTimeout;
    public static readonly TimeSpan DefaultHandshakeTimeout = TimeSpan.FromSeconds(5);
    /// <summary>Connections still in their opening (not authenticated yet), at most; one more is closed at once.</summary>
    public int MaxPendingHandshakes { get; init; } = DefaultMaxPendingHandshakes;
    public const int DefaultMaxPendingHandshakes = 32;

    /// <summary>
    /// Seed images (<c>--seed FILE</c>): blocks whose content is found in one (anywhere, block-aligned) are
    /// copied here instead of crossing the link (<see cref="SeedStore"/>). None, and no <see cref="SeedDir"/>: no exchange.
    /// </summary>
    public IReadOnlyList<string> Seeds { get; init; } = Array.Empty<string>();
    /// <summary>A directory whose regular files are all seeds (read at each migration).</summary>
    public string? SeedDir { get; init; }
    /// <summary>Called once a migration's seed index is built, before any block is copied from it (tests change seeds here).</summary>
    internal Action? SeedsIndexed { get; init; }

    /// <summary>Every problem, one line each, named as the CLI's options (none: usable).</summary>
    public IReadOnlyList<string> Validate()
    {
        var e = new List<string>();
        if (HandshakeTimeout.TotalSeconds is < 0.1 or > 3600) e.Add("--handshake-timeout: expected 0.1 to 3600 seconds");
        if (MaxPendingHandshakes is < 1 or > 100000) e.Add("--max-pending-handshakes: expected 1 to 100000");
        if (Seeds.Any(s => string.IsNullOrEmpty(s))) e.Add("--seed: an empty file name");
        if (SeedDir == "") e.Add("--seed-dir: an empty directory name");
        if (string.IsNullOrEmpty(ImageDir)) e.Add("no image directory (--image-dir DIR or image-dir in the config file)");
        return e;
    }
}
