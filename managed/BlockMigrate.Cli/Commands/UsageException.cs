namespace BlockMigrate.Cli.Commands;

/// <summary>
/// A command line or configuration the command cannot use: each line is printed as one
/// "blockmigrate: ..." line and the command exits with <see cref="CommandRunner.Usage"/> (2).
/// Not a <see cref="BlockMigrateException"/>, so that commands' failure handlers (exit 1) let it through.
/// </summary>
public sealed class UsageException : Exception
{
    public UsageException(string line) : this([line]) { }

    public UsageException(IReadOnlyList<string> lines) : base(string.Join("; ", lines)) => Lines = lines;

    public IReadOnlyList<string> Lines { get; }
}
