using System.Diagnostics;
using System.Text;

namespace BlockMigrate.TestSupport;

/// <summary>
/// A real nbdkit serving one image over a unix socket, with the BlockMigrate filter on top of the
/// file plugin (and optionally nbdkit's own filters beneath it). Stopped by PID on Dispose.
/// </summary>
public sealed class NbdkitServer : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stderr = new();

    private NbdkitServer(Process process, string socket)
    {
        _process = process;
        Socket = socket;
        _process.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (_stderr) _stderr.AppendLine(e.Data); };
        _process.BeginErrorReadLine();
    }

    public string Socket { get; }
    public int Pid => _process.Id;
    public string Uri => $"nbd+unix:///?socket={Socket}";
    public string Stderr { get { lock (_stderr) return _stderr.ToString(); } }
    public bool HasExited => _process.HasExited;
    /// <summary>nbdkit's exit status once it has exited (negative: killed by that signal, as .NET reports it).</summary>
    public int? ExitCode => _process.HasExited ? _process.ExitCode : null;

    /// <summary>
    /// Arguments for the filter and plugin: <c>--filter=OURS [--filter=inner...] file file=IMG dirtymap=MAP ...</c>.
    /// </summary>
    public static string[] FilterArgs(string image, string map, string? blockSize = null, bool gate = false,
        IEnumerable<string>? innerFilters = null, IEnumerable<string>? extra = null)
    {
        var a = new List<string> { "--filter=" + Repo.Filter };
        a.AddRange((innerFilters ?? []).Select(f => "--filter=" + f));
        a.AddRange(["file", "file=" + image, "dirtymap=" + map]);
        if (blockSize != null) a.Add("blocksize=" + blockSize);
        if (gate) a.Add("gate=true");
        a.AddRange(extra ?? []);
        return a.ToArray();
    }

    /// <summary>
    /// Starts nbdkit in the foreground on a fresh socket in <paramref name="dir"/> (or on
    /// <paramref name="socket"/>, e.g. to restart a killed server where its clients reconnect) and waits
    /// until it listens.
    /// </summary>
    public static NbdkitServer Start(string dir, IEnumerable<string> args, TimeSpan? timeout = null, string? socket = null)
    {
        socket ??= Path.Combine(dir, $"nbd-{Guid.NewGuid():N}"[..12] + ".sock");
        try { File.Delete(socket); } catch (IOException) { } // a killed server leaves its socket behind
        var psi = new ProcessStartInfo("nbdkit") { RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "-f", "-U", socket }.Concat(args)) psi.ArgumentList.Add(a);
        psi.Environment["PATH"] = Tool.Env["PATH"];
        var p = StartOnOwnThread(psi);
        var server = new NbdkitServer(p, socket);
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(20));
        while (!File.Exists(socket))
        {
            if (p.HasExited)
            {
                p.WaitForExit();
                throw new NbdkitFailedException(p.ExitCode, server.Stderr);
            }
            if (DateTime.UtcNow > deadline)
            {
                server.Dispose();
                throw new TimeoutException("nbdkit did not create its socket: " + server.Stderr);
            }
            Thread.Sleep(20);
        }
        return server;
    }

    /// <summary>
    /// nbdkit sets PR_SET_PDEATHSIG(SIGTERM) on itself, and Linux delivers that signal when the *thread*
    /// that forked it exits, not the process. Started from a thread-pool thread, nbdkit was shut down
    /// the moment the pool retired that thread (about 20 s idle): a long test lost its disk. So fork it
    /// from a thread of its own that lives until nbdkit exits.
    /// </summary>
    private static Process StartOnOwnThread(ProcessStartInfo psi)
    {
        Process? started = null;
        Exception? failed = null;
        using var ready = new ManualResetEventSlim();
        var thread = new Thread(() =>
        {
            Process? p = null;
            try
            {
                p = Process.Start(psi) ?? throw new InvalidOperationException("cannot start nbdkit");
                started = p;
            }
            catch (Exception e)
            {
                failed = e;
            }
            ready.Set();
            p?.WaitForExit();
        })
        { IsBackground = true, Name = "nbdkit parent" };
        thread.Start();
        ready.Wait();
        return started ?? throw (failed ?? new InvalidOperationException("cannot start nbdkit"));
    }

    /// <summary>Runs nbdkit expecting it to refuse to start; returns its exit code and stderr.</summary>
    public static async Task<(int ExitCode, string Stderr)> RunExpectingFailureAsync(string dir, IEnumerable<string> args)
    {
        try
        {
            using var s = Start(dir, args);
            // it started: a refusal may only show on the first connection, which must then fail
            var r = await Tool.RunAsync("nbdinfo", [s.Uri], TimeSpan.FromSeconds(20));
            return (r.ExitCode, s.Stderr + r.StandardError);
        }
        catch (NbdkitFailedException e)
        {
            return (e.ExitCode, e.Stderr);
        }
    }

    public void Dispose()
    {
        _process.KillAndWait(entireTree: true);
        _process.Dispose();
        try { File.Delete(Socket); } catch (IOException) { }
    }
}

public sealed class NbdkitFailedException(int exitCode, string stderr)
    : Exception($"nbdkit exited {exitCode}: {stderr}")
{
    public int ExitCode { get; } = exitCode;
    public string Stderr { get; } = stderr;
}
