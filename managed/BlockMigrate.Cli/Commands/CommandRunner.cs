using System.CommandLine;
using System.Runtime.InteropServices;

namespace BlockMigrate.Cli.Commands;

/// <summary>
/// Runs the parsed command line. An admin's mistake (bad flag, missing file, a refusal of ours)
/// is one line on stderr and a non-zero exit, never a stack trace.
/// </summary>
public static class CommandRunner
{
    public const int Ok = 0, Failure = 1, Usage = 2;

    public static int Invoke(RootCommand root, string[] args)
    {
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var e in parse.Errors)
                Console.Error.WriteLine($"blockmigrate: {e.Message}");
            Console.Error.WriteLine("Try 'blockmigrate --help'.");
            return Usage;
        }
        Logging.LogOptions.Apply(parse);
        // The first SIGINT/SIGTERM cancels the command's token and the command ends in its own time (a
        // migration gives its bits back, a receiver says STOPPING=1, a tunnel is removed) with its own exit
        // status; a second one terminates at once.  Not System.CommandLine's handler: it races the
        // command and may return 130/143 for a command that stopped cleanly.
        using var stop = new CancellationTokenSource();
        var signals = 0;
        void OnSignal(PosixSignalContext c)
        {
            if (Interlocked.Increment(ref signals) > 1) return; // default action: terminate
            c.Cancel = true;
            stop.Cancel();
        }
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        try
        {
            return parse.InvokeAsync(new InvocationConfiguration
            {
                EnableDefaultExceptionHandler = false,
                ProcessTerminationTimeout = null,
            }, stop.Token).GetAwaiter().GetResult();
        }
        catch (UsageException e)
        {
            foreach (var line in e.Lines)
                Console.Error.WriteLine($"blockmigrate: {line}");
            return Usage;
        }
        catch (BlockMigrateException e)
        {
            return Fail(e.Message);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return Fail(e.Message);
        }
    }

    public static int Fail(string message)
    {
        Console.Error.WriteLine($"blockmigrate: {message}");
        return Failure;
    }
}
