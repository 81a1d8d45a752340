namespace BlockMigrate;

/// <summary>
/// The root of BlockMigrate's errors. Its message is one line that names what failed and,
/// where there is one, what to do; the CLI prints it as is and exits non-zero.
/// </summary>
public class BlockMigrateException : Exception
{
    public BlockMigrateException(string message) : base(message) { }
    public BlockMigrateException(string message, Exception inner) : base(message, inner) { }
}
