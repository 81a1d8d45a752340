namespace BlockMigrate.Network.Tests;

internal static class SnapshotAssert
{
    /// <summary>Byte-for-byte equality, with a diff in the failure message.</summary>
    public static void Same(string before, string after, string what)
    {
        if (before == after) return;
        var a = Path.GetTempFileName();
        var b = Path.GetTempFileName();
        File.WriteAllText(a, before);
        File.WriteAllText(b, after);
        var diff = Sh.TryAsync($"diff -u {a} {b}").GetAwaiter().GetResult().StandardOutput;
        File.Delete(a);
        File.Delete(b);
        NUnit.Framework.Assert.Fail($"{what} changed:\n{diff}");
    }
}
