using System.Text;
using CliWrap;
using CliWrap.Buffered;

namespace BlockMigrate.Hypervisors.Libvirt;

/// <summary>
/// virsh through CliWrap, one libvirt connection per instance. Long-running virsh processes (migrate,
/// event) run under <c>setpriv --pdeathsig KILL</c> so that they die with us: libvirt then cleans up
/// the migration job of a client that went away (the source domain runs on, the half-built
/// destination domain is destroyed), instead of finishing a migration nobody will hand the disks over for.
/// </summary>
public sealed class Virsh(string executable, string? uri, TimeSpan timeout)
{
    private static readonly IReadOnlyDictionary<string, string?> Env = new Dictionary<string, string?> { ["LC_ALL"] = "C" };

    public string? Uri { get; } = uri;

    public IReadOnlyList<string> Arguments(IEnumerable<string> args) =>
        Uri == null ? [.. args] : ["-c", Uri, .. args];

    public string Describe(IEnumerable<string> args) => "virsh " + string.Join(' ', Arguments(args));

    public Command Command(IEnumerable<string> args, bool dieWithUs = false) => dieWithUs
        ? Cli.Wrap("setpriv").WithArguments(new[] { "--pdeathsig", "KILL", executable }.Concat(Arguments(args))).WithEnvironmentVariables(Env)
        : Cli.Wrap(executable).WithArguments(Arguments(args)).WithEnvironmentVariables(Env);

    /// <summary>Runs a short command; the result whatever its exit code.</summary>
    public async Task<BufferedCommandResult> RunAsync(IReadOnlyList<string> args, CancellationToken cancellationToken, TimeSpan? limit = null)
    {
        using var t = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        t.CancelAfter(limit ?? timeout);
        try
        {
            return await Command(args).WithValidation(CommandResultValidation.None).ExecuteBufferedAsync(Encoding.UTF8, t.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new HypervisorException($"libvirt: {Describe(args)} did not finish within {(limit ?? timeout).TotalSeconds:0} s");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new HypervisorException($"libvirt: cannot run {Describe(args)}: {e.Message}", e);
        }
    }

    /// <summary>Runs a short command and returns its stdout; a failure is a one-line error.</summary>
    public async Task<string> CheckAsync(IReadOnlyList<string> args, CancellationToken cancellationToken, TimeSpan? limit = null)
    {
        var r = await RunAsync(args, cancellationToken, limit);
        if (r.ExitCode != 0)
            throw new HypervisorException($"libvirt: {Describe(args)} failed: {LastLine(r.StandardError)}");
        return r.StandardOutput;
    }

    /// <summary><c>virsh domstate NAME</c>: "running", "paused", "shut off", ...; null when this host has no such domain.</summary>
    public async Task<string?> StateAsync(string domain, CancellationToken cancellationToken)
    {
        var r = await RunAsync(["domstate", domain], cancellationToken);
        if (r.ExitCode != 0)
        {
            if (r.StandardError.Contains("ailed to get domain", StringComparison.Ordinal) || r.StandardError.Contains("Domain not found", StringComparison.Ordinal))
                return null;
            throw new HypervisorException($"libvirt: {Describe(["domstate", domain])} failed: {LastLine(r.StandardError)}");
        }
        return r.StandardOutput.Trim();
    }

    public static string LastLine(string text)
    {
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var line = lines.LastOrDefault(l => l.StartsWith("error:", StringComparison.Ordinal) && l.Length > 7) ?? lines.LastOrDefault() ?? "(no message)";
        return line.Length > 300 ? line[..300] + " [cut]" : line;
    }
}
