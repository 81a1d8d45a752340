using CliWrap;
using CliWrap.Buffered;

namespace BlockMigrate.TestSupport;

/// <summary>Runs a test's setup script with sh, on the host or in a network namespace (ip netns exec).</summary>
public static class Shell
{
    /// <summary>Runs <paramref name="script"/> with <c>sh -ec</c>; a failure fails the test with the script and its stderr.</summary>
    public static async Task<string> RunAsync(string script, string? ns = null, CancellationToken ct = default)
    {
        var r = await TryAsync(script, ns, ct, "-ec");
        if (r.ExitCode != 0)
            throw new InvalidOperationException($"setup command failed ({r.ExitCode}) in {ns ?? "host"}: {script}\n{r.StandardError}");
        return r.StandardOutput;
    }

    /// <summary>Runs <paramref name="script"/> with <c>sh -c</c>, whatever its exit status.</summary>
    public static Task<BufferedCommandResult> TryAsync(string script, string? ns = null, CancellationToken ct = default) =>
        TryAsync(script, ns, ct, "-c");

    private static async Task<BufferedCommandResult> TryAsync(string script, string? ns, CancellationToken ct, string flag)
    {
        var cmd = ns is null
            ? Cli.Wrap("sh").WithArguments(["-" + flag.TrimStart('-'), script])
            : Cli.Wrap("ip").WithArguments(["netns", "exec", ns, "sh", flag, script]);
        return await cmd.WithEnvironmentVariables(Tool.Env).WithValidation(CommandResultValidation.None).ExecuteBufferedAsync(ct);
    }
}
