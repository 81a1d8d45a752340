using Microsoft.Extensions.Logging;
using System.Text.Json.Nodes;

namespace BlockMigrate.Hypervisors.Qemu;

/// <summary>
/// QEMU/KVM: memory and device state move with QEMU's own live migration, driven over QMP on both
/// hosts. The destination QEMU was started with <c>-incoming defer -S</c>; its disk is the destination
/// shim in gate mode, so it can never read a block that has not arrived.
///
/// The switchover hook is QEMU's <c>pause-before-switchover</c> capability: when the memory copy has
/// converged, the source stops the guest for good (STOP event, runstate finish-migrate), and instead of
/// sending the final device state it waits in migration status <c>pre-switchover</c> until told
/// <c>migrate-continue</c>. At that point no more guest writes can happen at the source and the
/// destination cannot have run yet, which is exactly where the disks must be frozen and their final
/// dirty set sent. libvirt uses the same capability for the same reason: its copy-storage migration
/// and its storage-backed switchover (e.g. shared-storage lock hand-over) must happen after the
/// source stopped and before the destination starts. Without it we would have to race QEMU's own
/// completion. The source stays in pre-switchover for as long as the callback takes; QEMU counts that
/// time in its reported downtime.
/// </summary>
public sealed partial class QemuHypervisor : IHypervisor
{
    private readonly QemuOptions _options;
    private QmpClient? _source;      // owned; connected in Prepare
    private QmpClient? _destination; // owned; connected in Prepare
    private QemuPhase _phase = QemuPhase.Idle;
    private readonly string? _memoryKey;    // null with --memory-plaintext
    private string? _destinationKeyDir;     // where the receiver wrote it (destination host)
    private string? _sourceKeyDir;          // where we wrote it for the source QEMU; removed once QEMU has read it

    /// <summary>The id of the <c>tls-creds-psk</c> object we add to both QEMUs.</summary>
    public const string TlsObjectId = "blockmigrate-memory-tls";

    public QemuHypervisor(QemuOptions options)
    {
        if (options.Validate() is [var problem, ..]) throw new HypervisorException(problem);
        _options = options;
        if (!options.MemoryPlaintext) _memoryKey = Transport.MemoryKey.New();
    }

    public string? MemoryKey => _memoryKey;

    public void MemoryKeyDelivered(string destinationDirectory) => _destinationKeyDir = destinationDirectory;

    public string Name => "qemu";

    /// <summary>
    /// The memory migration's last reported state, refreshed about every 200 ms while it runs (for
    /// <c>blockmigrate status</c>); null before Migrate.
    /// </summary>
    public QemuMigrationProgress? Progress { get; private set; }

    private string IncomingUri => _options.IncomingUri ?? _options.MigrationUri;

    public async Task PrepareAsync(CancellationToken cancellationToken)
    {
        if (_phase != QemuPhase.Idle)
            throw new HypervisorException($"qemu: Prepare called twice (phase {_phase})");
        _source = await QmpClient.ConnectAsync(_options.SourceQmp, _options.ConnectTimeout, cancellationToken);
        _destination = await QmpClient.ConnectAsync(_options.DestinationQmp, _options.ConnectTimeout, cancellationToken);

        await RecoverStaleMigrationAsync(_source, cancellationToken);
        await CheckTcgDirtyTrackingAsync(_source, cancellationToken);
        var src = await StatusAsync(_source, cancellationToken);
        if (src != "running")
            throw new HypervisorException($"qemu: the source VM ({_options.SourceQmp}) is '{src}', not running; start it (cont) before migrating");
        var dst = await StatusAsync(_destination, cancellationToken);
        if (dst != "inmigrate")
            throw new HypervisorException(
                $"qemu: the destination QEMU ({_options.DestinationQmp}) is '{dst}'; it must be waiting for a migration: start it with -incoming defer -S");
        if (_options.Multifd)
            await CheckMultifdAsync(cancellationToken);
        await SetUpMemoryTlsAsync(cancellationToken);

        // events on both sides (MIGRATION status changes); the pause on the source is our switchover hook
        await SetCapabilitiesAsync(_source, cancellationToken,
            ("events", true), ("pause-before-switchover", true), ("multifd", _options.Multifd),
            ("auto-converge", _options.AutoConverge));
        await SetCapabilitiesAsync(_destination, cancellationToken, ("events", true), ("multifd", _options.Multifd));
        await SetPostcopyAsync(cancellationToken);

        // Always set both: QEMU keeps the last values it was given, so an earlier run's (or the
        // admin's) --memory-bandwidth would otherwise silently apply to this one.
        var parameters = new JsonObject
        {
            ["max-bandwidth"] = _options.MaxBandwidth ?? QemuOptions.QemuDefaultMaxBandwidth,
            ["downtime-limit"] = (long)Math.Max(1, (_options.DowntimeLimit ?? QemuOptions.QemuDefaultDowntimeLimit).TotalMilliseconds),
        };
        if (_options.Multifd)
        {
            parameters["multifd-channels"] = _options.MultifdChannels;
            parameters["multifd-compression"] = _options.MultifdCompression;
            await _destination.ExecuteAsync("migrate-set-parameters", new JsonObject
            {
                ["multifd-channels"] = _options.MultifdChannels,
                ["multifd-compression"] = _options.MultifdCompression,
            }, cancellationToken);
        }
        if (parameters.Count > 0)
            await _source.ExecuteAsync("migrate-set-parameters", parameters, cancellationToken);

        if (_options.StartIncoming)
            await _destination.ExecuteAsync("migrate-incoming", new JsonObject { ["uri"] = IncomingUri }, cancellationToken);
        _phase = QemuPhase.Prepared;
    }

    /// <summary>
    /// QEMU before 9.0 loses guest memory writes in a live migration under TCG (no KVM). Measured with QEMU 7.2 alone
    /// (docs/qemu-ram-check.md, 127 runs): the destination's RAM differed from the source's in 25 of 34 runs that
    /// completed under a 1 ms downtime-limit, 16 of 32 under 50 ms, 0 of 31 under QEMU's 300 ms (and 0 of 12 not
    /// live); 44 of the 51 such guests crashed or hung after <c>cont</c>. The likely cause, fixed in 9.0 and not in
    /// Debian's 7.2.22: the dirty-bitmap sync cleared bits without resetting the vCPUs' TLB entries, so writes through
    /// them went unrecorded (QEMU commit 03bfc2188f, "physmem: Fix migration dirty bitmap coherency with TCG memory
    /// access"). We cannot mend QEMU; we say so, and do not lower the limit under QEMU's own (the 50 ms aim,
    /// <see cref="AimedDowntimeMs"/>) there. KVM tracks dirty pages itself.
    /// </summary>
    private async Task CheckTcgDirtyTrackingAsync(QmpClient source, CancellationToken cancellationToken)
    {
        var kvm = await source.ExecuteObjectAsync("query-kvm", null, cancellationToken);
        var version = (await source.ExecuteObjectAsync("query-version", null, cancellationToken))["qemu"] as JsonObject;
        _losesTcgWrites = LosesTcgWrites((bool?)kvm["enabled"] ?? false, (int?)version?["major"] ?? 0, (int?)version?["minor"] ?? 0);
        if (_losesTcgWrites)
            Log?.Invoke(LogLevel.Warning,
                $"the source QEMU {(int?)version?["major"]}.{(int?)version?["minor"]} runs without KVM (TCG): {TcgWriteLoss}; " +
                $"the downtime-limit is not lowered under QEMU's {QemuOptions.QemuDefaultDowntimeLimit.TotalMilliseconds:0} ms here. Use KVM, or QEMU 9.0 or later");
    }

    /// <summary>The warning's core, the same from every adapter that drives such a QEMU (libvirt's too).</summary>
    internal const string TcgWriteLoss = "QEMU before 9.0 can lose guest memory writes in a live migration under TCG " +
                                         "(fixed by QEMU commit 03bfc2188f), and the guest may then crash at the destination";

    /// <summary>True for a source that runs TCG on a QEMU older than 9.0 (<see cref="CheckTcgDirtyTrackingAsync"/>).</summary>
    internal static bool LosesTcgWrites(bool kvmEnabled, int major, int minor) => !kvmEnabled && major < 9;

    private bool _losesTcgWrites;

    /// <summary>
    /// A migration still in progress at the source is refused, unless it is one of ours whose
    /// orchestrator died (our process killed mid-copy): pause-before-switchover is on, which only we
    /// (or libvirt) set. Its destination never received the device state, so it never ran and the
    /// source holds the only live copy of the VM: cancel, and restart the source if it stopped.
    /// A re-run then needs a fresh destination QEMU (the old one exits when its migration fails).
    /// </summary>
    private static async Task RecoverStaleMigrationAsync(QmpClient source, CancellationToken cancellationToken)
    {
        var status = (string?)(await source.ExecuteObjectAsync("query-migrate", null, cancellationToken))["status"];
        if (status is not ("setup" or "active" or "pre-switchover" or "device" or "cancelling" or "postcopy-active"))
            return;
        var caps = await source.ExecuteAsync("query-migrate-capabilities", null, cancellationToken) as JsonArray ?? [];
        var ours = caps.Any(c => (string?)c?["capability"] == "pause-before-switchover" && (bool?)c?["state"] == true);
        if (ours && status == "postcopy-active")
            throw new HypervisorException("qemu: the source is still in post-copy from an earlier run: its VM already runs at that run's destination " +
                                          "and pulls the rest of its memory from here; let it complete (query-migrate), do not cancel it");
        if (!ours)
            throw new HypervisorException($"qemu: the source already runs a migration (status {status}) that BlockMigrate did not start; cancel it first (migrate_cancel)");
        await CancelAndResumeSourceAsync(source, cancellationToken);
    }

    /// <summary>
    /// TLS for the memory stream, unless the admin asked for plaintext: a <c>tls-creds-psk</c> object on
    /// each QEMU (the source as client with our copy of the key, the destination as server with the
    /// receiver's), and migration parameter <c>tls-creds</c> on both, so both ends refuse a peer without
    /// the key. With plaintext, <c>tls-creds</c> is cleared: QEMU keeps the last value it was given.
    /// QEMU's GnuTLS reads the destination's key file at each TLS handshake, so the receiver keeps it until
    /// its session ends (after the memory stream).
    /// </summary>
    private async Task SetUpMemoryTlsAsync(CancellationToken cancellationToken)
    {
        foreach (var qmp in new[] { _source!, _destination! })
            await DropMemoryTlsAsync(qmp, cancellationToken); // an earlier run's, killed before it cleaned up
        if (_memoryKey == null)
        {
            Say("memory stream in PLAINTEXT (--memory-plaintext): anyone on the path can read the guest's memory");
            return;
        }
        if (_destinationKeyDir == null)
            throw new HypervisorException("qemu: the memory stream's key was not delivered to the receiver, so the memory cannot be encrypted; " +
                                          "migrate through 'blockmigrate migrate' to a receiver of this version, or pass --memory-plaintext");
        _sourceKeyDir = Transport.MemoryKey.WriteDirectory(_memoryKey);
        foreach (var (qmp, side, endpoint, dir) in new[] { (_source!, "source", "client", _sourceKeyDir), (_destination!, "destination", "server", _destinationKeyDir) })
        {
            var creds = new JsonObject { ["qom-type"] = "tls-creds-psk", ["id"] = TlsObjectId, ["endpoint"] = endpoint, ["dir"] = dir };
            if (endpoint == "client") creds["username"] = Transport.MemoryKey.Username;
            try
            {
                await qmp.ExecuteAsync("object-add", creds, cancellationToken);
                if (endpoint == "client")
                {
                    // the client reads its key at object-add (tried): remove our copy now, so that even a
                    // SIGKILLed migrate leaves no key behind on the source host
                    Transport.MemoryKey.Remove(_sourceKeyDir);
                    _sourceKeyDir = null;
                }
                await qmp.ExecuteAsync("migrate-set-parameters", new JsonObject { ["tls-creds"] = TlsObjectId }, cancellationToken);
            }
            catch (QmpException e) when (e.ErrorClass != QmpException.DisconnectedClass)
            {
                throw new HypervisorException($"qemu: the {side} QEMU cannot encrypt the memory stream (TLS-PSK credentials in {dir}: {e.Description}); " +
                                              "QEMU must run as root to read them, or pass --memory-plaintext", e);
            }
        }
        Say("memory stream: TLS with a pre-shared key made for this migration (delivered to the receiver over the pinned channel)");
    }

    /// <summary>Clears <c>tls-creds</c> and removes our credentials object; errors (none there, QEMU gone) are ignored.</summary>
    private async Task DropMemoryTlsAsync(QmpClient qmp, CancellationToken cancellationToken)
    {
        try
        {
            await qmp.ExecuteAsync("migrate-set-parameters", new JsonObject { ["tls-creds"] = "" }, cancellationToken);
        }
        catch (QmpException e) { Ignored("clearing tls-creds", e); }
        try
        {
            await qmp.ExecuteAsync("object-del", new JsonObject { ["id"] = TlsObjectId }, cancellationToken);
        }
        catch (QmpException e) { Ignored("removing the TLS credentials object", e); }
    }

    private async Task CheckMultifdAsync(CancellationToken cancellationToken)
    {
        foreach (var (side, qmp) in new[] { ("source", _source!), ("destination", _destination!) })
        {
            var caps = await qmp.ExecuteAsync("query-migrate-capabilities", null, cancellationToken) as JsonArray ?? [];
            if (!caps.Any(c => (string?)c?["capability"] == "multifd"))
                throw new HypervisorException($"qemu: the {side} QEMU has no multifd migration; run without --multifd");
        }
    }

    /// <summary>
    /// <c>postcopy-ram</c> on both QEMUs as <see cref="QemuOptions.Postcopy"/> says (off too: QEMU keeps the
    /// last value it was given). The destination checks at this point that its host can do post-copy
    /// (userfaultfd), so a refusal is known before anything starts.
    /// </summary>
    private async Task SetPostcopyAsync(CancellationToken cancellationToken)
    {
        foreach (var (side, qmp) in new[] { ("source", _source!), ("destination", _destination!) })
        {
            var caps = await qmp.ExecuteAsync("query-migrate-capabilities", null, cancellationToken) as JsonArray ?? [];
            if (!caps.Any(c => (string?)c?["capability"] == "postcopy-ram"))
            {
                if (!_options.Postcopy) continue; // nothing to turn off
                throw new HypervisorException($"qemu: the {side} QEMU has no post-copy migration (postcopy-ram); run without --postcopy");
            }
            try
            {
                await SetCapabilitiesAsync(qmp, cancellationToken, ("postcopy-ram", _options.Postcopy));
            }
            catch (QmpException e) when (_options.Postcopy && e.ErrorClass != QmpException.DisconnectedClass)
            {
                throw new HypervisorException($"qemu: the {side} QEMU refuses post-copy ({e.Description}); " +
                                              "its host must allow userfaultfd (QEMU as root, or sysctl vm.unprivileged_userfaultfd=1); or run without --postcopy", e);
            }
        }
    }

    private static async Task SetCapabilitiesAsync(QmpClient qmp, CancellationToken cancellationToken, params (string Name, bool State)[] caps)
    {
        var list = new JsonArray();
        foreach (var (name, state) in caps)
            list.Add((JsonNode)new JsonObject { ["capability"] = name, ["state"] = state });
        await qmp.ExecuteAsync("migrate-set-capabilities", new JsonObject { ["capabilities"] = list }, cancellationToken);
    }

    private static async Task<string> StatusAsync(QmpClient qmp, CancellationToken cancellationToken) =>
        (string?)(await qmp.ExecuteObjectAsync("query-status", null, cancellationToken))["status"] ?? "unknown";

    public async ValueTask DisposeAsync()
    {
        Transport.MemoryKey.Remove(_sourceKeyDir);
        _sourceKeyDir = null;
        if (_source != null)
            await _source.DisposeAsync();
        if (_destination != null)
            await _destination.DisposeAsync();
        _source = _destination = null;
    }
}
