namespace BlockMigrate.TestSupport;

/// <summary>A fresh directory under /tmp/blockmigrate-tests, removed with everything in it on Dispose.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir(string? purpose = null)
    {
        var full = $"{purpose ?? "t"}-{Environment.ProcessId}-{Guid.NewGuid():N}";
        var name = full[..Math.Min(60, full.Length)]; // short: unix socket paths in it must stay under 108 bytes
        Path = System.IO.Path.Combine("/tmp/blockmigrate-tests", name);
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string this[string file] => System.IO.Path.Combine(Path, file);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); }
        catch (DirectoryNotFoundException) { }
    }
}
