using System.Diagnostics;
using System.Text.RegularExpressions;
using CliWrap;
using CliWrap.Buffered;

namespace BlockMigrate.Hypervisors.Xen;

/// <summary>
/// Xen through the <c>xl</c> toolstack. What xl allows decides the shape:
///
/// <c>xl migrate -p DOMAIN HOST</c> copies memory live, suspends the domain at the source for the last
/// round, and has the receiver (<c>xl migrate-receive -p</c> on HOST, reached over ssh) create the
/// domain there PAUSED. Once the receiver acknowledges, the sender gives it permission to start and
/// destroys the source domain; with <c>-p</c> the receiver does not unpause. So when <c>xl migrate</c>
/// returns 0 the guest has stopped writing for good (its source domain is gone) and cannot run yet at
/// the destination: that is where the switchover callback runs. Then <c>xl unpause</c> on HOST.
///
/// xl offers no hook between "suspended at the source" and "source destroyed", so unlike QEMU a failure
/// in the switchover (after <c>xl migrate</c> succeeded) cannot put the VM back at the source: the only
/// copy of its memory is the paused domain at the destination. Abort then refuses to destroy it and
/// says what the admin can do (see docs/hypervisors.md). A failure inside <c>xl migrate</c> before its
/// point of no return is handled by xl itself: it resumes the domain at the source and the receiver
/// destroys its half-built copy (named <c>DOMAIN--incoming</c>); Abort checks both ends.
/// </summary>
public sealed partial class XenHypervisor : IHypervisor
{
    private static readonly Regex DomainName = new("^[A-Za-z0-9][A-Za-z0-9_.-]*$");
    private readonly XenOptions _options;
    private XenPhase _phase = XenPhase.Idle;

    public XenHypervisor(XenOptions options)
    {
        // the name reaches a remote shell through ssh: allow only what xl itself accepts without quoting
        if (!DomainName.IsMatch(options.Domain))
            throw new HypervisorException($"xen: '{options.Domain}' is not a usable domain name (letters, digits, _ . -)");
        _options = options;
    }

    public string Name => "xen";

    private string Domain => _options.Domain;

    public async Task PrepareAsync(CancellationToken cancellationToken)
    {
        var here = await ListAsync(remote: false, Domain, cancellationToken);
        if (here == null)
            throw new HypervisorException($"xen: no domain '{Domain}' on this host (xl list {Domain})");
        if (here.Dying || here.Suspended)
            throw new HypervisorException($"xen: domain '{Domain}' is not running (state {here.Flags})");
        var there = await ListAsync(remote: true, Domain, cancellationToken);
        if (there != null)
            throw new HypervisorException(
                $"xen: {_options.DestinationHost} already has a domain '{Domain}' (state {there.Flags}); remove it first");
        _phase = XenPhase.Prepared;
    }

    public async Task<HypervisorReport> MigrateAsync(Func<CancellationToken, Task> switchover, CancellationToken cancellationToken)
    {
        if (_phase != XenPhase.Prepared)
            throw new HypervisorException($"xen: Migrate needs a prepared hypervisor (phase {_phase})");
        var started = Stopwatch.GetTimestamp();
        _phase = XenPhase.Migrating;
        var args = new List<string> { "migrate", "-p" };
        if (_options.SshCommand != null)
            args.AddRange(["-s", _options.SshCommand]);
        if (_options.ConfigFile != null)
            args.AddRange(["-C", _options.ConfigFile]);
        args.AddRange([Domain, _options.DestinationHost]);
        // xl has no way to stop a migration; cancelling interrupts it (SIGINT, then SIGKILL after 30 s)
        // and Abort inspects both ends
        using var forceful = new CancellationTokenSource();
        using var graceful = cancellationToken.Register(() => forceful.CancelAfter(TimeSpan.FromSeconds(30)));
        var result = await Cli.Wrap(_options.XlPath).WithArguments(args)
            .WithValidation(CommandResultValidation.None)
            .ExecuteBufferedAsync(System.Text.Encoding.UTF8, System.Text.Encoding.UTF8, forceful.Token, cancellationToken);
        if (result.ExitCode != 0)
            throw new HypervisorException($"xen: xl migrate {Domain} {_options.DestinationHost} failed (exit {result.ExitCode}): {LastLine(result.StandardError)}");
        var migrated = Stopwatch.GetElapsedTime(started);

        // the domain has arrived paused and the source domain is gone: no guest write can happen anywhere
        _phase = XenPhase.ArrivedPaused;
        var switchoverStarted = Stopwatch.GetTimestamp();
        await switchover(cancellationToken);
        var switchoverTime = Stopwatch.GetElapsedTime(switchoverStarted);
        _phase = XenPhase.Committed;

        using var finishing = new CancellationTokenSource(_options.CommandTimeout);
        await RunCheckedAsync(remote: true, ["unpause", Domain], finishing.Token);
        _phase = XenPhase.Resumed;
        // xl reports neither its downtime nor the bytes it sent; the guest was down at least from the
        // end of xl migrate to the unpause
        return new HypervisorReport(Name, Stopwatch.GetElapsedTime(started), null, null, 0)
        {
            Switchover = switchoverTime,
        };
    }

    private static string LastLine(string text) =>
        text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault() ?? "(no output)";

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
