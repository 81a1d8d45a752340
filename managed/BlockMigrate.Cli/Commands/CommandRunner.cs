using System.CommandLine;

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
        try
        {
            return parse.Invoke(new InvocationConfiguration
            {
                EnableDefaultExceptionHandler = false,
                // Ctrl-C / SIGTERM cancel the command's token; give a migration time to give its bits back
                ProcessTerminationTimeout = TimeSpan.FromSeconds(30),
            });
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
