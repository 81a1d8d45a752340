using System.Text.Json.Serialization;

namespace BlockMigrate.Network;

/// <summary>
/// The <c>network</c> section of the migrate report: what was set up, when, and what went wrong.
/// Serialise with <see cref="RedirectionJsonContext"/> (source-generated, AOT-safe).
/// </summary>
public sealed record RedirectionReport
{
    /// <summary>"tunnel+dns", "tunnel", "dns" or "none".</summary>
    public string Redirector { get; init; } = "none";

    /// <summary>The tunnel kind actually used (after probing the kernels).</summary>
    public TunnelKind? TunnelKind { get; init; }

    /// <summary>Why that kind was chosen, e.g. "gre requested; ip_gre missing on source; using vxlan".</summary>
    public string? TunnelKindReason { get; init; }

    /// <summary>Name of our tunnel link on both hosts (bmtunN).</summary>
    public string? TunnelLink { get; init; }

    /// <summary>When the tunnel links existed on both hosts and connection tracking had started.</summary>
    public DateTimeOffset? TunnelPreparedAt { get; init; }

    /// <summary>When packets for the old address started going through the tunnel.</summary>
    public DateTimeOffset? TunnelUpAt { get; init; }

    /// <summary>Live connections to or from the old address when the tunnel came up.</summary>
    public int? ConnectionsAtTunnelUp { get; init; }

    /// <summary>When everything of the tunnel was removed again.</summary>
    public DateTimeOffset? TunnelRemovedAt { get; init; }

    /// <summary>Why the tunnel was removed.</summary>
    public TunnelRemovalReason? TunnelRemovedBecause { get; init; }

    /// <summary>Live connections still open when the tunnel was removed (non-zero after a timeout).</summary>
    public int? ConnectionsAtRemoval { get; init; }

    /// <summary>When the record's TTL was lowered before migration.</summary>
    public DateTimeOffset? DnsPreparedAt { get; init; }

    /// <summary>The TTL the records had before they were lowered: resolvers may cache the old answer this long after <see cref="DnsPreparedAt"/>.</summary>
    public int? DnsPreviousTtl { get; init; }

    /// <summary>The lowered TTL.</summary>
    public int? DnsPreparedTtl { get; init; }

    /// <summary>Until when resolvers may still hold the record with its old, long TTL (prepare time plus
    /// the old TTL): the engine may wait for this before switchover.</summary>
    [JsonIgnore]
    public DateTimeOffset? DnsOldTtlExpiresAt => DnsPreparedAt + (DnsPreviousTtl is { } t ? TimeSpan.FromSeconds(t) : null);

    /// <summary>When the primary accepted the update to the new address.</summary>
    public DateTimeOffset? DnsChangedAt { get; init; }

    /// <summary>Outcome of the update (null when no update was attempted).</summary>
    public DnsUpdateStatus? DnsStatus { get; init; }

    /// <summary>The addresses the name points at after the update.</summary>
    public IReadOnlyList<string>? DnsAddresses { get; init; }

    /// <summary>Everything that failed, in order.</summary>
    public IReadOnlyList<RedirectionError> Errors { get; init; } = [];

    /// <summary>True when no step failed.</summary>
    [JsonIgnore]
    public bool Succeeded => Errors.Count == 0;

    /// <summary>True when a DNS update was attempted and did not succeed (the CLI exits with a distinct status).</summary>
    [JsonIgnore]
    public bool DnsFailed => DnsStatus is not null and not DnsUpdateStatus.Updated;

    /// <summary>This report with one more error.</summary>
    public RedirectionReport WithError(string step, string message) =>
        this with { Errors = [.. Errors, new RedirectionError(step, message, DateTimeOffset.UtcNow)] };

    /// <summary>This report as indented JSON.</summary>
    public string ToJson() => System.Text.Json.JsonSerializer.Serialize(this, Readable.RedirectionReport);

    // Same metadata, without escaping '+' and other harmless characters (the output is not HTML).
    static readonly RedirectionJsonContext Readable = new(new System.Text.Json.JsonSerializerOptions(RedirectionJsonContext.Default.Options)
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    });
}
