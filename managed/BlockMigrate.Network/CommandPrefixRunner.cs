using System.Text;
using CliWrap;
using CliWrap.Buffered;

namespace BlockMigrate.Network;

/// <summary>
/// Runs commands through CliWrap, after an optional prefix: none (this host), "ip netns exec NAME"
/// (a namespace, in tests) or "ssh [options] user@host" (another host). With ssh the command is
/// shell-quoted, because ssh hands the remote shell one string. Each command gets at most
/// <see cref="CommandTimeout"/>.
/// </summary>
public sealed class CommandPrefixRunner : IHostRunner, IHostShellRunner
{
    readonly string[] _prefix;
    readonly bool _remoteShell;

    /// <summary>A runner with <paramref name="prefix"/> put before each command. <paramref name="remoteShell"/>:
    /// the prefix passes one command string to a shell (ssh), so arguments are quoted.</summary>
    public CommandPrefixRunner(IReadOnlyList<string> prefix, bool remoteShell = false)
    {
        _prefix = [.. prefix];
        _remoteShell = remoteShell;
    }

    /// <summary>Runs commands on this host.</summary>
    public static CommandPrefixRunner Local { get; } = new([]);

    /// <summary>Runs commands in network namespace <paramref name="name"/> (ip netns exec).</summary>
    public static CommandPrefixRunner InNamespace(string name) => new(["ip", "netns", "exec", name]);

    /// <summary>From a config string: "" is local; a prefix starting with "ssh" quotes for the remote shell.
    /// Words are split on blanks; '...' and "..." group words.</summary>
    public static CommandPrefixRunner Parse(string? prefix)
    {
        var words = SplitWords(prefix ?? "");
        if (words.Count == 0) return Local;
        return new CommandPrefixRunner(words, Path.GetFileName(words[0]) == "ssh");
    }

    /// <summary>Longest one command may run.</summary>
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <inheritdoc/>
    public string Description => _prefix.Length == 0 ? "local" : string.Join(' ', _prefix);

    /// <inheritdoc/>
    public async Task<HostCommandResult> RunAsync(string program, IReadOnlyList<string> arguments,
        string? standardInput, CancellationToken cancellationToken)
    {
        string target;
        IReadOnlyList<string> args;
        if (_prefix.Length == 0) { target = program; args = arguments; }
        else if (_remoteShell)
        {
            target = _prefix[0];
            args = [.. _prefix[1..], string.Join(' ', new[] { program }.Concat(arguments).Select(ShellQuote))];
        }
        else { target = _prefix[0]; args = [.. _prefix[1..], program, .. arguments]; }

        var line = string.Join(' ', new[] { target }.Concat(args));
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(CommandTimeout);
        var cmd = Cli.Wrap(target).WithArguments(args).WithValidation(CommandResultValidation.None);
        if (standardInput is not null)
            cmd = cmd.WithStandardInputPipe(PipeSource.FromString(standardInput, Encoding.UTF8));
        try
        {
            var r = await cmd.ExecuteBufferedAsync(Encoding.UTF8, timeout.Token).ConfigureAwait(false);
            return new HostCommandResult(line, r.ExitCode, r.StandardOutput, r.StandardError);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return new HostCommandResult(line, -1, "", $"timed out after {CommandTimeout.TotalSeconds:0} s: {line}");
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            return new HostCommandResult(line, -1, "", $"cannot run {target}: {ex.Message}");
        }
    }

    /// <inheritdoc/>
    public HostShell? StartShell()
    {
        string[] sh = ["sh", "-c", HostShell.Script];
        if (_prefix.Length == 0) return HostShell.Start(sh[0], sh[1..]);
        if (_remoteShell) return HostShell.Start(_prefix[0], [.. _prefix[1..], string.Join(' ', sh.Select(ShellQuote))]);
        return HostShell.Start(_prefix[0], [.. _prefix[1..], .. sh]);
    }

    /// <summary>Quote one word for a POSIX shell.</summary>
    public static string ShellQuote(string word) =>
        word.Length > 0 && word.All(c => char.IsAsciiLetterOrDigit(c) || "@%+=:,./_-".Contains(c))
            ? word
            : "'" + word.Replace("'", "'\\''") + "'";

    static List<string> SplitWords(string s)
    {
        var words = new List<string>();
        var cur = new StringBuilder();
        bool inWord = false;
        char quote = '\0';
        foreach (var c in s)
        {
            if (quote != '\0') { if (c == quote) quote = '\0'; else cur.Append(c); continue; }
            if (c is '\'' or '"') { quote = c; inWord = true; continue; }
            if (char.IsWhiteSpace(c))
            {
                if (inWord) { words.Add(cur.ToString()); cur.Clear(); inWord = false; }
                continue;
            }
            cur.Append(c); inWord = true;
        }
        if (inWord) words.Add(cur.ToString());
        return words;
    }

    /// <inheritdoc/>
    public override string ToString() => Description;
}
