// The .deb under test: build/package/blockmigrate_*.deb, made by packaging/build-deb.sh when it
// is absent or older than what it is made of (packaging/, managed/ sources, build/native/).
namespace BlockMigrate.Packaging.Tests;

public static class Package
{
    private static readonly Lazy<string> deb = new(Build, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Full path of the .deb (built on first use).</summary>
    public static string Deb => deb.Value;

    /// <summary>The staged tree build-deb.sh assembled the .deb from (built on first use).</summary>
    public static string StagedRoot
    {
        get { _ = Deb; return Staged; }
    }

    private static string Staged => Path.Combine(Tool.Top, "build/package/work/debian/blockmigrate");

    public static string Version => Tool.Run("dpkg-deb", "--field", Deb, "Version").Stdout.Trim();

    private static string Build()
    {
        var dir = Path.Combine(Tool.Top, "build/package");
        var existing = Directory.Exists(dir) ? Directory.GetFiles(dir, "blockmigrate_*.deb").FirstOrDefault() : null;
        if (existing is not null && Directory.Exists(Staged) && File.GetLastWriteTimeUtc(existing) >= NewestInput())
            return existing;
        var r = Tool.Run(Path.Combine(Tool.Top, "packaging/build-deb.sh"), [], TimeSpan.FromMinutes(15));
        if (r.ExitCode != 0)
            throw new InvalidOperationException("packaging/build-deb.sh failed: " + r);
        return Directory.GetFiles(dir, "blockmigrate_*.deb").Single();
    }

    private static DateTime NewestInput()
    {
        var newest = DateTime.MinValue;
        foreach (var sub in new[] { "packaging", "managed", "build/native" })
        {
            var path = Path.Combine(Tool.Top, sub);
            if (!Directory.Exists(path)) continue;
            foreach (var f in Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories))
                if (!f.Contains("/obj/") && !f.Contains("/bin/"))
                    newest = new[] { newest, File.GetLastWriteTimeUtc(f) }.Max();
        }
        return newest;
    }
}
