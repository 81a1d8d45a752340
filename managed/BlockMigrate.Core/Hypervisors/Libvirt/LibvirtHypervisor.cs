using Microsoft.Extensions.Logging;
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using BlockMigrate.Hypervisors.Qemu;
using CliWrap;
using CliWrap.Buffered;

namespace BlockMigrate.Hypervisors.Libvirt;

/// <summary>
/// libvirt: memory and device state move with libvirt's own live migration
/// (<c>virsh migrate --live --suspend</c>), so libvirt keeps owning the QEMU monitor (no pass-through,
/// no tainted domain). <c>--suspend</c> leaves the domain PAUSED at the destination when the memory copy
/// has finished; by then the source QEMU has stopped the guest for good and libvirt has removed the source
/// domain. That is where the switchover callback runs (as for Xen); then <c>virsh resume</c> at the
/// destination. The destination domain's XML is the source's with each shim disk's socket replaced by
/// the destination shim's (<see cref="LibvirtOptions.DestinationSockets"/>), sent with <c>--xml</c>.
///
/// Before <c>virsh migrate</c> returns, an abort leaves the VM running at the source: libvirt cancels the
/// job itself when its client (virsh, which dies with us) goes away, and <see cref="AbortAsync"/> also
/// sends <c>domjobabort</c> and resumes a source left paused. After it returned, the only copy of the VM's
/// memory is the paused destination domain: it is never destroyed by us (see docs/hypervisors.md).
/// </summary>
public sealed class LibvirtHypervisor : IHypervisor
{
    private readonly LibvirtOptions _options;
    private readonly Virsh _source;
    private readonly Virsh _destination;
    private Phase _phase = Phase.Idle;
    private string? _tempDir;
    private string? _destinationXml;
    private string? _persistentXml;

    private enum Phase { Idle, Prepared, Resuming, Migrating, Arrived, HandingOver, HandedOver, Done, Aborted }

    public LibvirtHypervisor(LibvirtOptions options)
    {
        if (options.Validate() is [var problem, ..]) throw new HypervisorException(problem);
        _options = options;
        _source = new Virsh(options.Virsh, options.Connect, options.CommandTimeout);
        _destination = new Virsh(options.Virsh, options.DestinationConnect, options.CommandTimeout);
    }

    public string Name => "libvirt";

    public event Action<LogLevel, string>? Log;

    private string Domain => _options.Domain;

    private void Say(string line) => Log?.Invoke(LogLevel.Information, line);

    /// <summary>
    /// For a domain of type <c>qemu</c> (TCG), from <c>virsh version</c>'s "Running hypervisor: QEMU X.Y.Z": the warning
    /// the QEMU adapter gives too (<c>QemuHypervisor.CheckTcgDirtyTrackingAsync</c>: QEMU before 9.0 loses guest writes in
    /// a live migration under TCG); null for QEMU 9.0 or later, or when the version cannot be read.
    /// </summary>
    internal static string? TcgWarning(string virshVersion) =>
        Regex.Match(virshVersion, @"Running hypervisor:\s+QEMU\s+(\d+)\.(\d+)") is { Success: true } v
        && QemuHypervisor.LosesTcgWrites(false, int.Parse(v.Groups[1].Value, CultureInfo.InvariantCulture), int.Parse(v.Groups[2].Value, CultureInfo.InvariantCulture))
            ? $"the domain runs on QEMU {v.Groups[1].Value}.{v.Groups[2].Value} without KVM (domain type 'qemu', TCG): {QemuHypervisor.TcgWriteLoss}. Use KVM, or QEMU 9.0 or later"
            : null;

    private void Ignored(string what, Exception e) => Log?.Invoke(LogLevel.Debug, $"{what} failed (ignored): {e.Message}");

    public async Task PrepareAsync(CancellationToken cancellationToken)
    {
        if (_phase != Phase.Idle)
            throw new HypervisorException($"libvirt: Prepare called twice (phase {_phase})");
        var here = await _source.StateAsync(Domain, cancellationToken);
        var there = await _destination.StateAsync(Domain, cancellationToken);
        if (here is null or "shut off" && there == "paused")
        {
            // an earlier run died after libvirt's memory copy and before the hand-over: the VM's memory is in
            // the paused destination domain, nothing writes the source disks any more. Finish the disks, resume there.
            Say($"'{Domain}' is paused at the destination and not running here: an earlier run moved its memory; finishing the disks, then resuming it there");
            _phase = Phase.Resuming;
            return;
        }
        if (here == null)
            throw new HypervisorException($"libvirt: no domain '{Domain}' at the source ({_source.Describe(["domstate", Domain])})");
        if (here != "running")
            throw new HypervisorException($"libvirt: domain '{Domain}' is '{here}' at the source, not running; start or resume it before migrating");
        if (there != null)
            throw new HypervisorException($"libvirt: the destination ({_options.DestinationConnect}) already has a domain '{Domain}' ({there}); remove it first");
        var job = await _source.RunAsync(["domjobinfo", Domain], cancellationToken);
        if (job.ExitCode == 0 && Regex.Match(job.StandardOutput, @"Job type:\s+(\S+)") is { Success: true } m && m.Groups[1].Value is not ("None" or "Completed"))
            throw new HypervisorException($"libvirt: domain '{Domain}' already has a job running ({m.Groups[1].Value}): wait for it or abort it (virsh domjobabort {Domain})");

        var live = LibvirtDomainXml.Parse(await _source.CheckAsync(["dumpxml", "--migratable", Domain], cancellationToken));
        if ((string?)live.Root?.Attribute("type") == "qemu" // TCG; "kvm" is KVM
            && TcgWarning((await _source.RunAsync(["version"], cancellationToken)).StandardOutput) is { } tcg)
            Log?.Invoke(LogLevel.Warning, tcg);
        var disks = LibvirtDomainXml.ShimDisks(live, Domain);
        if (_options.ShimDisks.Count > 0) LibvirtShimDisks.CheckUnchanged(live, Domain, _options.ShimDisks);
        foreach (var target in _options.DestinationSockets.Keys)
            if (disks.All(d => d.Target != target))
                throw new HypervisorException($"libvirt: --destination-socket names disk {target}, which domain '{Domain}' has not behind the shim ({string.Join(", ", disks.Select(d => d.Target))})");
        foreach (var d in disks)
            Say($"disk {d.Target}: {d.Description}{(d.Format is { } f ? $" ({f})" : "")} -> destination {_options.DestinationSockets.GetValueOrDefault(d.Target, d.Socket!)}");

        _tempDir = LibvirtTempDir.Create("migrate", Say); // 0700; stale ones of killed runs removed
        _destinationXml = Path.Combine(_tempDir, "domain.xml");
        await File.WriteAllTextAsync(_destinationXml, LibvirtDomainXml.WithSockets(live, _options.DestinationSockets), cancellationToken);
        if (_options.Persistent)
        {
            // the destination's persistent definition must point at its shim too, not at the source's socket
            var inactive = await _source.RunAsync(["dumpxml", "--inactive", "--migratable", Domain], cancellationToken);
            var xml = inactive.ExitCode == 0 ? LibvirtDomainXml.Parse(inactive.StandardOutput) : live;
            _persistentXml = Path.Combine(_tempDir, "persistent.xml");
            await File.WriteAllTextAsync(_persistentXml, LibvirtDomainXml.WithSockets(xml, _options.DestinationSockets), cancellationToken);
        }
        _phase = Phase.Prepared;
    }

    private List<string> MigrateArguments()
    {
        var args = new List<string> { "migrate", "--live", "--suspend", "--xml", _destinationXml! };
        if (_options.MemoryTunnelled) args.AddRange(["--p2p", "--tunnelled"]);
        if (_options.Persistent) args.AddRange(["--persistent", "--undefinesource", "--persistent-xml", _persistentXml!]);
        if (_options.MigrationUri != null) args.AddRange(["--migrateuri", _options.MigrationUri]);
        if (_options.MaxBandwidth is { } bw) args.AddRange(["--bandwidth", Math.Max(1, (bw + (1 << 20) - 1) >> 20).ToString(CultureInfo.InvariantCulture)]);
        if (_options.AutoConverge) args.Add("--auto-converge");
        args.AddRange([Domain, _options.DestinationConnect]);
        return args;
    }

    public async Task<HypervisorReport> MigrateAsync(Func<CancellationToken, Task> switchover, CancellationToken cancellationToken)
    {
        if (_phase is not (Phase.Prepared or Phase.Resuming))
            throw new HypervisorException($"libvirt: Migrate needs a prepared hypervisor (phase {_phase})");
        var total = Stopwatch.StartNew();
        await using var sourceEvents = new LibvirtEvents(_source, Domain, Ignored);
        await using var destinationEvents = new LibvirtEvents(_destination, Domain, Ignored);
        await Task.Delay(300, cancellationToken); // let both watchers register before anything happens
        DateTimeOffset? returned = null, finished = null;
        Task<BufferedCommandResult>? confirming = null;
        if (_phase == Phase.Prepared)
        {
            var args = MigrateArguments();
            Say($"memory: {_source.Describe(args)}");
            _phase = Phase.Migrating;
            var migrating = _source.Command(args, dieWithUs: true).WithValidation(CommandResultValidation.None)
                .ExecuteBufferedAsync(System.Text.Encoding.UTF8, cancellationToken).Task;
            // The guest pauses at the source's 'Suspended Migrated'. libvirt's Finish at the destination then leaves the
            // domain paused there (--suspend) and ends its job; Confirm at the source follows, killing the source QEMU, and
            // took 1.6 s of a 1.8 s pause here. The hand-over need not wait for it (see FinishedAtDestinationAsync).
            while (!migrating.IsCompleted)
            {
                if (await FinishedAtDestinationAsync(sourceEvents, destinationEvents, cancellationToken))
                {
                    finished = DateTimeOffset.UtcNow;
                    confirming = migrating;
                    break;
                }
                await Task.WhenAny(migrating, Task.Delay(20, cancellationToken));
            }
            if (confirming == null)
            {
                var r = await migrating;
                if (r.ExitCode != 0)
                    throw new HypervisorException($"libvirt: virsh migrate failed: {Virsh.LastLine(r.StandardError)}");
                returned = DateTimeOffset.UtcNow;
            }
            _phase = Phase.Arrived;
            Say($"memory moved in {total.Elapsed.TotalSeconds:0.00} s; '{Domain}' paused at the destination{(confirming != null ? " (libvirt is still confirming at the source)" : "")}");
        }
        if (confirming == null)
        {
            // the guest is paused here: both checks at once (each is a virsh process)
            var destinationState = _destination.StateAsync(Domain, cancellationToken);
            var sourceState = _source.StateAsync(Domain, cancellationToken);
            var state = await destinationState;
            var source = await sourceState;
            if (state != "paused")
                throw new HypervisorException($"libvirt: after the memory copy '{Domain}' is '{state ?? "absent"}' at the destination, not paused; the disks were not handed over");
            if (source is "running" or "paused")
                throw new HypervisorException($"libvirt: '{Domain}' is still '{source}' at the source after the memory copy; refusing to hand the disks over");
        }

        _phase = Phase.HandingOver;
        var handingOver = DateTimeOffset.UtcNow;
        var sw = Stopwatch.StartNew();
        try
        {
            await switchover(cancellationToken);
        }
        catch when (confirming != null)
        {
            // let libvirt's Confirm finish (the source QEMU stopped, the source domain removed) before the abort
            // reports the paused destination domain, so that a re-run finds the state it expects
            try { await confirming.WaitAsync(_options.CommandTimeout, CancellationToken.None); }
            catch (Exception e) when (e is TimeoutException or OperationCanceledException) { Ignored("waiting for virsh migrate", e); }
            throw;
        }
        var switchoverTime = sw.Elapsed;
        _phase = Phase.HandedOver;
        Say($"disks handed over in {switchoverTime.TotalMilliseconds:0} ms; resuming '{Domain}' at the destination");
        var resuming = DateTimeOffset.UtcNow;
        await ResumeDestinationAsync(CancellationToken.None, checkedPaused: true);
        _phase = Phase.Done;
        if (confirming != null)
        {
            // libvirt's Confirm kills the source QEMU and (--persistent) undefines the source domain: wait for it
            var r = await confirming;
            returned = DateTimeOffset.UtcNow;
            if (r.ExitCode != 0 || await _source.StateAsync(Domain, CancellationToken.None) == "running")
            {
                // libvirt resumes the source only when it believes Finish failed; the destination runs on its disks now
                var suspend = await _source.RunAsync(["suspend", Domain], CancellationToken.None);
                throw new HypervisorException(
                    $"libvirt: virsh migrate failed after '{Domain}' took over at the destination ({Virsh.LastLine(r.StandardError)}); the domain runs there on the " +
                    $"handed-over disks; the source domain was {(suspend.ExitCode == 0 ? "paused" : "not paused: " + Virsh.LastLine(suspend.StandardError))}: destroy it there (virsh destroy {Domain})");
            }
        }

        // figures after the resume: the guest no longer waits for them
        var c = await _destination.RunAsync(["domjobinfo", "--completed", "--rawstats", Domain], CancellationToken.None);
        var stats = c.ExitCode == 0 ? c.StandardOutput : null;
        var stopped = sourceEvents.First("Suspended");
        var resumed = await destinationEvents.WaitForAsync("Resumed", TimeSpan.FromSeconds(3));
        TimeSpan? guest = stopped is { } a && resumed is { } b && b > a ? b - a : null;
        var report = new HypervisorReport(Name, total.Elapsed, Stat(stats, "downtime") is { } ms ? TimeSpan.FromMilliseconds(ms) : null,
            guest, Stat(stats, "memory_processed") ?? 0) { Switchover = switchoverTime };
        Say($"guest paused {(guest is { } g ? $"{g.TotalMilliseconds:0} ms" : "(no events)")} (source 'Suspended' -> destination 'Resumed'), libvirt's downtime {report.HypervisorDowntime?.TotalMilliseconds.ToString("0", CultureInfo.InvariantCulture) ?? "?"} ms");
        if (stopped is { } t0)
        {
            var marks = sourceEvents.All().Select(e => (e.At, $"source {e.What}"))
                .Concat(destinationEvents.All().Select(e => (e.At, $"destination {e.What}"))).ToList();
            if (returned is { } ret) marks.Add((ret, "virsh migrate returned"));
            if (finished is { } fin) marks.Add((fin, "finished at the destination"));
            marks.Add((handingOver, "hand-over starts"));
            marks.Add((resuming, "virsh resume"));
            Say("where the pause went (ms after the source's 'Suspended'): " + Timeline(t0, marks));
        }
        return report;
    }

    /// <summary>While <c>virsh migrate</c> runs: the job's <c>memory_processed</c> (<c>domjobinfo --rawstats</c>, one virsh call).</summary>
    public async Task<long?> MemoryBytesSentAsync(CancellationToken cancellationToken)
    {
        if (_phase != Phase.Migrating) return null;
        var job = await _source.RunAsync(["domjobinfo", "--rawstats", Domain], cancellationToken);
        return job.ExitCode == 0 ? Stat(job.StandardOutput, "memory_processed") : null;
    }

    /// <summary>
    /// Whether libvirt's Finish step is over at the destination, so that the disks can be handed over and the
    /// domain resumed there while the source's Confirm step still runs (what libvirt itself does without
    /// <c>--suspend</c>: Finish resumes the destination, Confirm then kills the source). True only when the
    /// destination sent 'Suspended' after the source's 'Suspended Migrated' (the end of the memory copy), has no
    /// job left (<c>domjobinfo</c>: Job type None) and is paused. The source is not asked (see below).
    /// </summary>
    private async Task<bool> FinishedAtDestinationAsync(LibvirtEvents sourceEvents, LibvirtEvents destinationEvents, CancellationToken ct)
    {
        if (sourceEvents.First("Suspended Migrated") is not { } stopped) return false;
        if (!destinationEvents.All().Any(e => e.At >= stopped && e.What.StartsWith("Suspended", StringComparison.Ordinal))) return false;
        // the destination only: the source libvirtd answers nothing about the domain while Confirm stops its QEMU
        // (a domstate there waited 1.7 s); that the source does not run again is checked once virsh migrate returned
        var job = _destination.RunAsync(["domjobinfo", Domain], ct);
        var there = _destination.StateAsync(Domain, ct);
        var (j, t) = (await job, await there);
        return j.ExitCode == 0 && Regex.IsMatch(j.StandardOutput, @"Job type:\s+None\b") && t == "paused";
    }

    /// <summary><c>name +ms, name +ms, …</c> in time order, relative to <paramref name="zero"/> (events before it left out).</summary>
    internal static string Timeline(DateTimeOffset zero, IEnumerable<(DateTimeOffset At, string What)> marks) =>
        string.Join(", ", marks.Where(m => m.At >= zero).OrderBy(m => m.At)
            .Select(m => $"{m.What} +{(m.At - zero).TotalMilliseconds.ToString("0", CultureInfo.InvariantCulture)}"));

    /// <summary>A figure of <c>domjobinfo --completed --rawstats</c> (<c>downtime: 330</c>).</summary>
    internal static long? Stat(string? rawstats, string key)
    {
        if (rawstats == null) return null;
        var m = Regex.Match(rawstats, $@"^\s*{Regex.Escape(key)}\s*:\s*(\d+)\s*$", RegexOptions.Multiline);
        return m.Success ? long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : null;
    }

    private async Task ResumeDestinationAsync(CancellationToken cancellationToken, bool checkedPaused = false)
    {
        if (checkedPaused)
        {
            // seen paused just before the hand-over: resume at once (one virsh process while the guest waits)
            var r = await _destination.RunAsync(["resume", Domain], cancellationToken);
            if (r.ExitCode == 0) return;
            Log?.Invoke(LogLevel.Warning, $"libvirt: virsh resume failed ({Virsh.LastLine(r.StandardError)}); checking the domain's state");
        }
        var state = await _destination.StateAsync(Domain, cancellationToken);
        if (state == "running") return;
        if (state != "paused")
            throw new HypervisorException($"libvirt: '{Domain}' is '{state ?? "absent"}' at the destination after the hand-over; the disks are there: start it there from them");
        await _destination.CheckAsync(["resume", Domain], cancellationToken);
    }

    public async Task ContinueAfterHandOverAsync(CancellationToken cancellationToken)
    {
        Say($"an earlier run handed the disks over; resuming '{Domain}' at the destination if it is paused");
        await ResumeDestinationAsync(cancellationToken);
        _phase = Phase.Done;
    }

    public async Task AbortAsync(CancellationToken cancellationToken)
    {
        switch (_phase)
        {
            case Phase.Idle or Phase.Prepared or Phase.Aborted or Phase.Resuming:
                _phase = Phase.Aborted;
                return;
            case Phase.HandedOver or Phase.Done:
                throw new HypervisorException("libvirt: the disks were handed over; the VM must not run at the source again");
            case Phase.Arrived or Phase.HandingOver:
                throw new HypervisorException(
                    $"libvirt: '{Domain}' is paused at the destination with the only copy of its memory (libvirt removed it at the source); " +
                    "it was not destroyed. Re-run the same migrate command to finish the disks and resume it there");
        }
        // Migrating: virsh died with the cancellation (or failed); libvirt cancels the job of a client that went away
        _phase = Phase.Aborted;
        var abort = await _source.RunAsync(["domjobabort", Domain], cancellationToken);
        Say($"domjobabort: {(abort.ExitCode == 0 ? "sent" : Virsh.LastLine(abort.StandardError))}");
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            var here = await _source.StateAsync(Domain, cancellationToken);
            var there = await _destination.StateAsync(Domain, cancellationToken);
            if (here == null && there == "paused")
                throw new HypervisorException(
                    $"libvirt: the memory copy finished as we aborted: '{Domain}' is paused at the destination and gone at the source; " +
                    "it was not destroyed. Re-run the same migrate command to finish the disks and resume it there");
            if (here == "running" && there == null)
            {
                Say($"'{Domain}' runs at the source");
                return;
            }
            if (here == "paused" && there == null)
            {
                var job = await _source.RunAsync(["domjobinfo", Domain], cancellationToken);
                if (!Regex.IsMatch(job.StandardOutput, @"Job type:\s+Unbounded"))
                {
                    Say($"'{Domain}' was left paused at the source; resuming it");
                    await _source.CheckAsync(["resume", Domain], cancellationToken);
                    continue;
                }
            }
            if (DateTime.UtcNow > until)
                throw new HypervisorException($"libvirt: after the abort '{Domain}' is '{here ?? "absent"}' at the source and '{there ?? "absent"}' at the destination; check both hosts");
            await Task.Delay(250, cancellationToken);
        }
    }

    public ValueTask DisposeAsync()
    {
        if (_tempDir != null)
            try { Directory.Delete(_tempDir, true); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { Ignored($"removing {_tempDir}", e); }
        _tempDir = null;
        return ValueTask.CompletedTask;
    }
}
