using System.Diagnostics;

namespace BlockMigrate.Network;

/// <summary>A runner that can keep one shell open on its host, to run short <c>ip</c> commands at once,
/// without starting a process (or an ssh session) for each.</summary>
public interface IHostShellRunner
{
    /// <summary>Starts the shell; null when it cannot be started (the caller then runs commands one by one).</summary>
    HostShell? StartShell();
}

/// <summary>
/// One <c>sh</c> on a host, started ahead of time (at prepare), that runs one <c>ip</c> command per line
/// written to it and answers each with one line, "ok" or "failed: ERROR". The tunnel's switch at the freeze
/// goes through it: a command here takes a fork of the host's shell (a few ms) instead of a new process
/// from us, through the host prefix (tens of ms on a loaded host), while the VM's traffic is lost at the
/// stopped source. The lines are iproute2 words without quoting (our own, never from outside).
/// </summary>
public sealed class HostShell : IAsyncDisposable
{
    /// <summary>The script: each line is "ip LINE"; the answer is one line.</summary>
    public const string Script = "while IFS= read -r l; do if o=$(ip $l 2>&1); then echo ok; else echo \"failed: $(echo $o)\"; fi; done";

    readonly Process _process;
    readonly SemaphoreSlim _one = new(1, 1);
    bool _broken;

    HostShell(Process p) { _process = p; }

    /// <summary>Starts <paramref name="program"/> <paramref name="arguments"/> (which must run <see cref="Script"/>); null if it cannot start.</summary>
    public static HostShell? Start(string program, IEnumerable<string> arguments)
    {
        var psi = new ProcessStartInfo(program)
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (var a in arguments) psi.ArgumentList.Add(a);
        try
        {
            var p = Process.Start(psi);
            if (p is null) return null;
            p.ErrorDataReceived += (_, _) => { };
            p.BeginErrorReadLine();
            return new HostShell(p);
        }
        catch (System.ComponentModel.Win32Exception) { return null; }
    }

    /// <summary>Runs each line as <c>ip LINE</c>, in order, stopping at the first that fails.
    /// Returns (true, null) when all ran, (true, error) when one failed, (false, why) when the shell is
    /// not usable (gone, or no answer within <paramref name="timeout"/>): then nothing is known to have
    /// run past the lines answered, and the shell is not used again.</summary>
    public async Task<(bool Usable, string? Error)> RunIpAsync(IReadOnlyList<string> lines, TimeSpan timeout, CancellationToken ct)
    {
        await _one.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (_broken || _process.HasExited) return (false, "the shell has exited");
            using var t = CancellationTokenSource.CreateLinkedTokenSource(ct);
            t.CancelAfter(timeout);
            foreach (var line in lines)
            {
                string? answer;
                try
                {
                    await _process.StandardInput.WriteLineAsync(line.AsMemory(), t.Token).ConfigureAwait(false);
                    await _process.StandardInput.FlushAsync(t.Token).ConfigureAwait(false);
                    answer = await _process.StandardOutput.ReadLineAsync(t.Token).ConfigureAwait(false);
                }
                catch (Exception e) when (e is IOException or ObjectDisposedException || e is OperationCanceledException && !ct.IsCancellationRequested)
                {
                    _broken = true;
                    return (false, e is OperationCanceledException ? $"no answer within {timeout.TotalSeconds:0} s" : e.Message);
                }
                catch (OperationCanceledException)
                {
                    _broken = true;   // an answer may still come: it would be taken for the next line's
                    throw;
                }
                if (answer is null) { _broken = true; return (false, "the shell has exited"); }
                if (answer != "ok") return (true, answer.StartsWith("failed: ", StringComparison.Ordinal) ? answer[8..] : answer);
            }
            return (true, null);
        }
        finally { _one.Release(); }
    }

    /// <summary>Closes the shell's input (it exits), killing it if it has not after two seconds.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            _process.StandardInput.Close();
            using var t = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            try { await _process.WaitForExitAsync(t.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) { _process.Kill(entireProcessTree: true); await _process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false); }
        }
        catch (Exception e) when (e is InvalidOperationException or IOException or System.ComponentModel.Win32Exception) { }
        _process.Dispose();
        _one.Dispose();
    }
}
