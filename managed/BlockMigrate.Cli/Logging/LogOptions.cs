using System.CommandLine;

namespace BlockMigrate.Cli.Logging;

/// <summary>The global --verbose/--quiet options, and applying them to the log configuration.</summary>
public static class LogOptions
{
    public static readonly Option<bool> Verbose = new("--verbose", "-v") { Description = "Log debug detail as well", Recursive = true };
    public static readonly Option<bool> Quiet = new("--quiet", "-q") { Description = "Log warnings and errors only", Recursive = true };

    public static void AddTo(RootCommand root)
    {
        root.Options.Add(Verbose);
        root.Options.Add(Quiet);
    }

    /// <summary>Configures logging from the parsed command line (call before invoking the command).</summary>
    public static LogStyle Apply(ParseResult parse) =>
        LogSetup.Configure(parse.GetValue(Verbose), parse.GetValue(Quiet));
}
