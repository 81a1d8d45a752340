namespace BlockMigrate.TestSupport;

/// <summary>Where the tree and what ./build.sh built are, seen from a test assembly.</summary>
public static class Repo
{
    public static string Root { get; } = FindRoot();

    public static string Filter => Path.Combine(Root, "build", "native", "nbdkit-blockmigrate-filter.so");

    /// <summary>The blockmigrate CLI assembly of the same configuration as the running tests.</summary>
    public static string CliDll
    {
        get
        {
            var config = AppContext.BaseDirectory.Contains("/Debug/") ? "Debug" : "Release";
            return Path.Combine(Root, "build", "managed", "bin", "BlockMigrate.Cli", config, "net10.0", "blockmigrate.dll");
        }
    }

    /// <summary>
    /// The blockmigrate command the tests and benchmarks start, program first, before the CLI's own arguments:
    /// <c>dotnet</c> <see cref="CliDll"/>, or the executable named by <c>BLOCKMIGRATE_CLI</c> when that is set —
    /// the benchmarks set it to the NativeAOT build the package ships (<c>tools/bench-cli.sh</c>), which is what
    /// an admin runs: a JIT process spends ~0.6 s more on a migration's start (TLS, the first calls).
    /// </summary>
    public static string[] CliCommand =>
        Environment.GetEnvironmentVariable("BLOCKMIGRATE_CLI") is { Length: > 0 } exe ? [exe] : ["dotnet", CliDll];

    private static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "BlockMigrate.sln")))
                return d.FullName;
        throw new InvalidOperationException("BlockMigrate.sln not found above " + AppContext.BaseDirectory);
    }
}
