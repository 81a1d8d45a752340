using System.Diagnostics;
using System.Text;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Network.Tests;

/// <summary>The blockmigrate CLI started inside a namespace (ip netns exec execs it: the PID is the CLI's);
/// output captured; killed by PID on Dispose.</summary>
internal sealed class CliProcess : IDisposable
{
    readonly Process _process;
    readonly StringBuilder _stdout = new(), _stderr = new();

    CliProcess(Process p)
    {
        _process = p;
        _process.OutputDataReceived += (_, e) => { if (e.Data != null) lock (_stdout) _stdout.AppendLine(e.Data); };
        _process.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (_stderr) _stderr.AppendLine(e.Data); };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public static CliProcess Start(string ns, params string[] args)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "netns", "exec", ns }.Concat(Repo.CliCommand).Concat(args)) psi.ArgumentList.Add(a);
        psi.Environment["PATH"] = Tool.Env["PATH"];
        psi.Environment["BLOCKMIGRATE_RUN_DIR"] = Tool.Env["BLOCKMIGRATE_RUN_DIR"];
        return new CliProcess(Process.Start(psi)!);
    }

    public string Stdout { get { lock (_stdout) return _stdout.ToString(); } }
    public string Stderr { get { lock (_stderr) return _stderr.ToString(); } }
    public bool HasExited => _process.HasExited;

    public Task<string> WaitForStdoutAsync(string pattern, CancellationToken ct) => WaitAsync(() => Stdout, pattern, ct);

    public Task<string> WaitForStderrAsync(string text, CancellationToken ct) =>
        WaitAsync(() => Stderr, System.Text.RegularExpressions.Regex.Escape(text), ct);

    async Task<string> WaitAsync(Func<string> output, string pattern, CancellationToken ct)
    {
        while (true)
        {
            var m = System.Text.RegularExpressions.Regex.Match(output(), pattern);
            if (m.Success) return m.Value;
            if (_process.HasExited)
            {
                _process.WaitForExit();
                m = System.Text.RegularExpressions.Regex.Match(output(), pattern);
                if (m.Success) return m.Value;
                throw new InvalidOperationException($"exited ({_process.ExitCode}) without /{pattern}/:\n{Stdout}\n{Stderr}");
            }
            await Task.Delay(50, ct);
        }
    }

    public async Task<int> WaitForExitAsync(TimeSpan timeout, CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new TimeoutException($"still running after {timeout.TotalSeconds:0} s:\n{Stdout}\n{Stderr}");
        }
        _process.WaitForExit();
        return _process.ExitCode;
    }

    public void Signal(string name) => Process.Start("kill", [$"-{name}", _process.Id.ToString()])!.WaitForExit();

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
            _process.WaitForExit(10_000);
        }
        catch (InvalidOperationException) { }
        _process.Dispose();
    }
}
