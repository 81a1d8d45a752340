using System.Runtime.InteropServices;

namespace BlockMigrate.Interop;

/// <summary>Compares the C# mirror of <c>struct bm_info</c> with what the C library reports.</summary>
public static class LayoutProbe
{
    /// <summary>One line per disagreement; empty when the mirror matches the library.</summary>
    public static IReadOnlyList<string> Mismatches()
    {
        var problems = new List<string>();
        var nativeSize = (long)NativeMethods.InfoSize();
        var managedSize = Marshal.SizeOf<BmInfo>();
        if (nativeSize != managedSize)
            problems.Add($"sizeof(struct bm_info) is {nativeSize} in C, {managedSize} in C#");
        foreach (var (cName, csName) in BmInfo.Fields)
        {
            var c = NativeMethods.InfoOffset(cName);
            var cs = (long)Marshal.OffsetOf<BmInfo>(csName);
            if (c != cs)
                problems.Add($"bm_info.{cName} is at {c} in C, {cs} in C#");
        }
        return problems;
    }
}
