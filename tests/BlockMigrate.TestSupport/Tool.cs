using CliWrap;
using CliWrap.Buffered;

namespace BlockMigrate.TestSupport;

/// <summary>Runs an external program (an independent NBD client, nbdkit, the CLI) to completion.</summary>
public static class Tool
{
    /// <summary>Debian's python3 comes first: nbdsh needs its nbd module, which pyenv's python lacks.
    /// BLOCKMIGRATE_RUN_DIR keeps the status files of the migrations tests run out of /run/blockmigrate.</summary>
    public static readonly IReadOnlyDictionary<string, string?> Env = new Dictionary<string, string?>
    {
        ["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin:" + Environment.GetEnvironmentVariable("PATH"),
        ["BLOCKMIGRATE_RUN_DIR"] = "/tmp/blockmigrate-tests/run",
    };

    public static async Task<BufferedCommandResult> RunAsync(string program, IEnumerable<string> args,
        TimeSpan? timeout = null, string? stdin = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(120));
        var cmd = Cli.Wrap(program).WithArguments(args).WithEnvironmentVariables(Env)
            .WithValidation(CommandResultValidation.None);
        if (stdin != null) cmd = cmd.WithStandardInputPipe(PipeSource.FromString(stdin));
        return await cmd.ExecuteBufferedAsync(cts.Token);
    }

    /// <summary>Runs and fails the test with the program's stderr when it exits non-zero.</summary>
    public static async Task<BufferedCommandResult> CheckAsync(string program, IEnumerable<string> args,
        TimeSpan? timeout = null, string? stdin = null)
    {
        var r = await RunAsync(program, args, timeout, stdin);
        if (r.ExitCode != 0)
            NUnit.Framework.Assert.Fail($"{program} {string.Join(' ', args)} exited {r.ExitCode}: {r.StandardError.Trim()}");
        return r;
    }

    /// <summary>Runs the blockmigrate CLI built in the tree.</summary>
    public static Task<BufferedCommandResult> BlockMigrateAsync(params string[] args) =>
        RunAsync(Repo.CliCommand[0], Repo.CliCommand[1..].Concat(args));
}
