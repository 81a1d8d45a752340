using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;

namespace BlockMigrate.TestSupport;

/// <summary>A long-running process a test starts (receiver, writer, WAN emulator); output captured; killed by PID on Dispose.</summary>
public sealed class BackgroundProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stdout = new(), _stderr = new();
    private readonly SemaphoreSlim _line = new(0);

    /// <summary>Raised for each stderr line (from a reader thread).</summary>
    public event Action<string>? StderrLine;

    public BackgroundProcess(string program, IEnumerable<string> args, IReadOnlyDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["PATH"] = Tool.Env["PATH"];
        psi.Environment["BLOCKMIGRATE_RUN_DIR"] = Tool.Env["BLOCKMIGRATE_RUN_DIR"];
        foreach (var (k, v) in env ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        _process = Process.Start(psi) ?? throw new InvalidOperationException("cannot start " + program);
        _process.OutputDataReceived += (_, e) => { if (e.Data != null) { lock (_stdout) _stdout.AppendLine(e.Data); _line.Release(); } };
        _process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data == null) return;
            lock (_stderr) _stderr.AppendLine(e.Data);
            _line.Release();
            StderrLine?.Invoke(e.Data);
        };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public static BackgroundProcess Cli(params string[] args) => new(Repo.CliCommand[0], Repo.CliCommand[1..].Concat(args));

    /// <summary>The CLI with extra environment variables.</summary>
    public static BackgroundProcess Cli(IReadOnlyDictionary<string, string> env, params string[] args) =>
        new(Repo.CliCommand[0], Repo.CliCommand[1..].Concat(args), env);
    /// <summary>The CLI inside a network namespace (<c>ip netns exec</c> execs it: the PID is the CLI's).</summary>
    public static BackgroundProcess CliIn(string? netns, params string[] args) => netns == null
        ? Cli(args)
        : new("ip", new[] { "netns", "exec", netns }.Concat(Repo.CliCommand).Concat(args));

    public static BackgroundProcess Python(string script, params string[] args) =>
        new("/usr/bin/python3", new[] { Path.Combine(Repo.Root, "tools", script) }.Concat(args));

    public int Pid => _process.Id;
    public bool HasExited => _process.HasExited;
    public int ExitCode => _process.ExitCode;
    public string Stdout { get { lock (_stdout) return _stdout.ToString(); } }
    public string Stderr { get { lock (_stderr) return _stderr.ToString(); } }

    /// <summary>Waits for a stdout line matching <paramref name="pattern"/>; returns its match.</summary>
    public Task<Match> WaitForLineAsync(string pattern, TimeSpan timeout) => WaitForAsync(() => Stdout, pattern, timeout);

    /// <summary>Waits for a stderr line (the CLI's log) matching <paramref name="pattern"/>.</summary>
    public Task<Match> WaitForStderrLineAsync(string pattern, TimeSpan timeout) => WaitForAsync(() => Stderr, pattern, timeout);

    private async Task<Match> WaitForAsync(Func<string> output, string pattern, TimeSpan timeout)
    {
        var re = new Regex(pattern, RegexOptions.Multiline);
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var m = re.Match(output());
            if (m.Success) return m;
            if (_process.HasExited && !re.IsMatch(output()))
                throw new InvalidOperationException($"process exited ({_process.ExitCode}) without printing /{pattern}/: {Stderr}");
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"no line /{pattern}/ within {timeout}: {Stderr}");
            await _line.WaitAsync(TimeSpan.FromMilliseconds(100));
        }
    }

    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cts.Token);
        _process.WaitForExit(); // flush the output readers
        return _process.ExitCode;
    }

    /// <summary>SIGTERM, then SIGKILL if it does not go within the grace period.</summary>
    public void Stop(TimeSpan? grace = null)
    {
        if (_process.HasExited) return;
        Process.Start("kill", ["-TERM", _process.Id.ToString()])?.WaitForExit();
        if (!_process.WaitForExit((int)(grace ?? TimeSpan.FromSeconds(5)).TotalMilliseconds)) Kill();
        else _process.WaitForExit();
    }

    public void Kill()
    {
        _process.KillAndWait(entireTree: true);
    }

    public void Dispose()
    {
        Kill();
        _process.Dispose();
    }
}
