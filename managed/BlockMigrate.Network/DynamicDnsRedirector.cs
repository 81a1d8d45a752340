using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace BlockMigrate.Network;

/// <summary>
/// Points the VM's name at its new address with an RFC 2136 UPDATE to the zone's primary, signed with
/// TSIG (the key file's algorithm, hmac-sha256 from tsig-keygen), through nsupdate. The update replaces
/// all A and AAAA records of the name with the new addresses in one message, so resolvers never see the
/// name without an address. With <see cref="RedirectionOptions.DnsPrepareTtl"/>, <see cref="PrepareAsync"/>
/// first re-publishes the current records with that low TTL, so caches let go of the old address soon
/// after switchover; <see cref="AbortAsync"/> before switchover puts the old TTL back.
/// A refused update is an error in the report (<see cref="RedirectionReport.DnsStatus"/>), never an exception.
/// The key file is read where nsupdate runs (<see cref="RedirectionOptions.DnsCommand"/>; locally by default).
/// </summary>
public sealed class DynamicDnsRedirector : IRedirector
{
    readonly ILogger _log;

    readonly RedirectionOptions _options;
    readonly NsUpdate _ns;
    readonly string _name;
    readonly SemaphoreSlim _step = new(1, 1);
    RedirectionReport _report = new() { Redirector = "dns" };     // written under _step
    List<NsUpdate.Record>? _lowered;                            // records whose TTL we lowered, with their old TTL
    bool _updated;

    /// <summary>A DNS redirector running nsupdate and dig through <paramref name="runner"/>.</summary>
    public DynamicDnsRedirector(RedirectionOptions options, IHostRunner runner, ILogger? logger = null)
    {
        _log = logger ?? NullLogger.Instance;
        if (options.Validate() is { Count: > 0 } errors)
            throw new ArgumentException(string.Join("; ", errors), nameof(options));
        if (!options.DnsEnabled)
            throw new ArgumentException("no dns-name configured", nameof(options));
        _options = options;
        DnsServerAddress.TryParse(options.DnsServer!, out var server);
        _ns = new NsUpdate(runner, server, options.Zone!, options.KeyFile, options.DnsTimeout);
        _name = NsUpdate.Fqdn(options.DnsName!);
    }

    /// <summary>A DNS redirector running nsupdate as <see cref="RedirectionOptions.DnsCommand"/> says.</summary>
    public DynamicDnsRedirector(RedirectionOptions options, ILogger? logger = null) : this(options, CommandPrefixRunner.Parse(options.DnsCommand), logger)
    {
    }

    /// <inheritdoc/>
    public string Kind => "dns";

    /// <inheritdoc/>
    public RedirectionReport Report => _report;

    /// <inheritdoc/>
    public async Task<RedirectionReport> PrepareAsync(CancellationToken cancellationToken)
    {
        await _step.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_options.KeyFile is { } key && TsigKeyFile.Problem(key) is { } bad)
            {
                Error("dns-prepare", bad);
                return _report;
            }
            if (_options.DnsPrepareTtl is not { } low || _lowered is not null)
                return _report;
            var current = new List<NsUpdate.Record>();
            foreach (var type in new[] { "A", "AAAA" })
            {
                var (records, err) = await _ns.QueryAsync(_name, type, cancellationToken).ConfigureAwait(false);
                if (err is not null) { Error("dns-prepare", err); return _report; }
                current.AddRange(records!);
            }
            var high = current.Where(r => r.Ttl > low).ToList();
            if (high.Count == 0)
            {
                _report = _report with { DnsPreparedAt = DateTimeOffset.UtcNow, DnsPreparedTtl = low, DnsPreviousTtl = current.Count > 0 ? current.Max(r => r.Ttl) : null };
                return _report;
            }
            var lines = Replace(current, low);
            var (status, message) = await _ns.SendAsync(lines, $"lower TTL of {_name} to {low}", cancellationToken).ConfigureAwait(false);
            if (status != DnsUpdateStatus.Updated) { Error("dns-prepare", message); return _report; }
            _lowered = current;
            var previous = current.Max(r => r.Ttl);
            _report = _report with { DnsPreparedAt = DateTimeOffset.UtcNow, DnsPreparedTtl = low, DnsPreviousTtl = previous };
            _log.DnsTtlLowered(_name, previous, low, previous);
            return _report;
        }
        finally { _step.Release(); }
    }

    /// <inheritdoc/>
    /// <remarks>Nothing: the name changes at the hand-over (<see cref="RedirectAsync"/>), once the VM is the destination's.</remarks>
    public Task<RedirectionReport> DivertAsync(CancellationToken cancellationToken) =>
        cancellationToken.IsCancellationRequested ? Task.FromCanceled<RedirectionReport>(cancellationToken) : Task.FromResult(_report);

    /// <inheritdoc/>
    public async Task<RedirectionReport> RedirectAsync(CancellationToken cancellationToken)
    {
        await _step.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_updated) return _report;
            var ttl = _options.DnsTtl;
            var adds = _options.NewAddresses.Select(a => new NsUpdate.Record(NsUpdate.TypeOf(a), ttl, a.ToString()));
            var addresses = _options.NewAddresses.Select(a => a.ToString()).ToList();
            var (status, message) = await _ns.SendAsync(Replace(adds, ttl), $"{_name} -> {string.Join(", ", addresses)}", cancellationToken).ConfigureAwait(false);
            if (status == DnsUpdateStatus.Updated)
            {
                _updated = true;
                _report = _report with { DnsStatus = status, DnsChangedAt = DateTimeOffset.UtcNow, DnsAddresses = addresses };
                _log.DnsUpdated(_name, string.Join(", ", addresses), ttl);
            }
            else
            {
                _report = _report with { DnsStatus = status };
                Error("dns", message);
            }
            return _report;
        }
        finally { _step.Release(); }
    }

    /// <inheritdoc/>
    public Task<RedirectionReport> WaitDrainedAndTeardownAsync(CancellationToken cancellationToken) => Task.FromResult(_report);

    /// <inheritdoc/>
    public async Task<RedirectionReport> AbortAsync(CancellationToken cancellationToken)
    {
        await _step.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // After the update the VM lives at the new address: the name stays there.
            if (_updated || _lowered is null) return _report;
            var lines = Replace(_lowered, null);
            var (status, message) = await _ns.SendAsync(lines, $"restore TTL of {_name}", cancellationToken).ConfigureAwait(false);
            if (status == DnsUpdateStatus.Updated)
            {
                _log.DnsTtlRestored(_name);
                _lowered = null;
            }
            else Error("dns-abort", message);
            return _report;
        }
        finally { _step.Release(); }
    }

    // One message: delete every A and AAAA of the name, add the given records (with ttl, or their own).
    List<string> Replace(IEnumerable<NsUpdate.Record> records, int? ttl)
    {
        var lines = new List<string> { $"update delete {_name} A", $"update delete {_name} AAAA" };
        foreach (var r in records)
            lines.Add(string.Create(CultureInfo.InvariantCulture, $"update add {_name} {ttl ?? r.Ttl} {r.Type} {r.Data}"));
        return lines;
    }

    void Error(string step, string message)
    {
        _log.StepFailed(step, message);
        _report = _report.WithError(step, message);
    }
}
