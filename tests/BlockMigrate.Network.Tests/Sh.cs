using BlockMigrate.Network;

namespace BlockMigrate.Network.Tests;

/// <summary>Runs test setup commands; a failing one fails the test with its command and stderr.</summary>
internal static class Sh
{
    public static async Task<string> RunAsync(string script, string? ns = null, CancellationToken ct = default)
    {
        var runner = ns is null ? CommandPrefixRunner.Local : CommandPrefixRunner.InNamespace(ns);
        var r = await runner.RunAsync("sh", ["-ec", script], null, ct);
        if (!r.Succeeded)
            throw new InvalidOperationException($"setup command failed ({r.ExitCode}) in {ns ?? "host"}: {script}\n{r.StandardError}");
        return r.StandardOutput;
    }

    public static async Task<HostCommandResult> TryAsync(string script, string? ns = null, CancellationToken ct = default)
    {
        var runner = ns is null ? CommandPrefixRunner.Local : CommandPrefixRunner.InNamespace(ns);
        return await runner.RunAsync("sh", ["-c", script], null, ct);
    }
}
