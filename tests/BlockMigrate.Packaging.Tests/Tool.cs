// Runs external commands for the packaging checks: captured output, a deadline, and a kill of
// the whole process tree (by PID) when the deadline passes.
using System.Diagnostics;

namespace BlockMigrate.Packaging.Tests;

public sealed record ToolResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}";
}

public static class Tool
{
    /// <summary>The tree's top directory (the one with BlockMigrate.sln).</summary>
    public static string Top { get; } = FindTop();

    public static ToolResult Run(string file, IEnumerable<string> args, TimeSpan timeout,
        IDictionary<string, string>? env = null, string? cwd = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = cwd ?? Top,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        // Debian's tools first (the machine may have other python3/lintian shadows on PATH)
        psi.Environment["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin:" + Environment.GetEnvironmentVariable("PATH");
        if (env is not null)
            foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish in {timeout}\n{stdout.Result}\n{stderr.Result}");
        }
        p.WaitForExit();
        return new ToolResult(p.ExitCode, stdout.Result, stderr.Result);
    }

    public static ToolResult Run(string file, params string[] args) => Run(file, args, TimeSpan.FromMinutes(5));

    public static bool Exists(string command) =>
        "/usr/sbin:/usr/bin:/sbin:/bin".Split(':').Any(d => File.Exists(Path.Combine(d, command)));

    private static string FindTop()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "BlockMigrate.sln")))
                return dir.FullName;
        throw new InvalidOperationException("cannot find the tree (BlockMigrate.sln) above " + AppContext.BaseDirectory);
    }
}
