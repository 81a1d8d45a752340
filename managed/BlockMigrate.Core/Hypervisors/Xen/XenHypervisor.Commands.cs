using CliWrap;
using CliWrap.Buffered;

namespace BlockMigrate.Hypervisors.Xen;

// Running xl here or, through the remote command (ssh HOST), on the destination dom0.
public sealed partial class XenHypervisor
{
    private Command XlCommand(bool remote, IEnumerable<string> xlArgs)
    {
        if (!remote)
            return Cli.Wrap(_options.XlPath).WithArguments(xlArgs);
        var prefix = _options.Remote;
        return Cli.Wrap(prefix[0]).WithArguments(prefix.Skip(1).Append(_options.RemoteXlPath).Concat(xlArgs));
    }

    private async Task<BufferedCommandResult> RunAsync(bool remote, IReadOnlyList<string> xlArgs, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_options.CommandTimeout);
        try
        {
            return await XlCommand(remote, xlArgs).WithValidation(CommandResultValidation.None).ExecuteBufferedAsync(timeout.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new HypervisorException($"xen: {Describe(remote, xlArgs)} did not finish within {_options.CommandTimeout.TotalSeconds:0} s");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new HypervisorException($"xen: cannot run {Describe(remote, xlArgs)}: {e.Message}", e);
        }
    }

    private async Task RunCheckedAsync(bool remote, IReadOnlyList<string> xlArgs, CancellationToken cancellationToken)
    {
        var r = await RunAsync(remote, xlArgs, cancellationToken);
        if (r.ExitCode != 0)
            throw new HypervisorException($"xen: {Describe(remote, xlArgs)} failed (exit {r.ExitCode}): {LastLine(r.StandardError)}");
    }

    /// <summary><c>xl list NAME</c>: the domain's state, or null when there is no such domain.</summary>
    private async Task<XlDomainState?> ListAsync(bool remote, string name, CancellationToken cancellationToken)
    {
        var r = await RunAsync(remote, ["list", name], cancellationToken);
        return r.ExitCode == 0 ? XlDomainState.Parse(r.StandardOutput, name) : null;
    }

    private string Describe(bool remote, IEnumerable<string> xlArgs) =>
        (remote ? string.Join(' ', _options.Remote) + " " + _options.RemoteXlPath : _options.XlPath) + " " + string.Join(' ', xlArgs);
}
