namespace BlockMigrate.TestSupport;

/// <summary>
/// The test guest's kernel and initramfs, built once by tools/guest/build-guest.sh into build/guest/
/// (cached across runs; the script locks, so parallel test assemblies share one build).
/// </summary>
public static class GuestImage
{
    public static string Directory => Path.Combine(Repo.Root, "build", "guest");
    public static string Kernel => Path.Combine(Directory, "vmlinuz");
    public static string Initrd => Path.Combine(Directory, "initrd.gz");

    /// <summary>Builds the guest if it is missing or stale; call from a [OneTimeSetUp].</summary>
    public static async Task EnsureBuiltAsync()
    {
        var script = Path.Combine(Repo.Root, "tools", "guest", "build-guest.sh");
        await Tool.CheckAsync(script, [Directory], TimeSpan.FromMinutes(5));
    }
}
