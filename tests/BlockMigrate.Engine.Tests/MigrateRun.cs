using System.Text.Json;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>One run of <c>blockmigrate migrate</c>, its exit code, its one-line error and its JSON report.</summary>
public sealed record MigrateRun(int ExitCode, string Stdout, string Stderr)
{
    public JsonElement Report => JsonDocument.Parse(Stdout).RootElement;

    /// <summary>The last line of stderr: the one-line error on failure.</summary>
    public string Error => Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault() ?? "";

    public static async Task<MigrateRun> RunAsync(SourceShim source, string to, KeyPair? keys, params string[] extra)
    {
        var args = new List<string> { Repo.CliDll, "migrate", "--disk", source.DiskArg(), "--to", to, "--json", "--timeout", "120" };
        if (keys != null) args.AddRange(["--key", keys.SourceKey, "--peer-fingerprint", keys.ReceiverFingerprint]);
        else args.Add("--plaintext");
        args.AddRange(extra);
        var r = await Tool.RunAsync("dotnet", args, TimeSpan.FromSeconds(150));
        return new MigrateRun(r.ExitCode, r.StandardOutput, r.StandardError);
    }

    /// <summary>migrate with exactly these arguments (after "migrate").</summary>
    public static async Task<MigrateRun> RunArgsAsync(params string[] args)
    {
        var r = await Tool.RunAsync("dotnet", new[] { Repo.CliDll, "migrate" }.Concat(args), TimeSpan.FromSeconds(150));
        return new MigrateRun(r.ExitCode, r.StandardOutput, r.StandardError);
    }

    public override string ToString() => $"exit {ExitCode}\nstdout: {Stdout}\nstderr: {Stderr}";
}
