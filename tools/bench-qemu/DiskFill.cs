using BlockMigrate.TestSupport;

namespace BlockMigrate.Bench.Qemu;

/// <summary>
/// Writes the data area of the benchmark's source disk (<c>--fill-kind</c>).
/// <list type="bullet">
/// <item><see cref="FillKind.Random"/>: random bytes, which no method can compress (the worst case).</item>
/// <item><see cref="FillKind.Os"/>: the regular files of the host's <see cref="OsTrees"/>, each tree in
/// path order, one file from each tree in turn (libraries and programs mixed, as on a system disk),
/// every file once (hard links, such as Mesa's many names of one driver, count once), each starting on
/// a 4 KiB boundary with its tail zero-padded as a file system stores it, until the fill is full.
/// Deterministic on one host, and as compressible as an installed system.</item>
/// </list>
/// </summary>
public static class DiskFill
{
    public static readonly string[] OsTrees = ["/usr/lib/x86_64-linux-gnu", "/usr/bin"];
    private const int FileAlignment = 4096;

    /// <summary>Writes <paramref name="bytes"/> of data at the stream's position (a sparse image: what is skipped reads as zeros).</summary>
    public static async Task WriteAsync(FileStream image, long bytes, FillKind kind)
    {
        var end = image.Position + bytes;
        if (kind == FillKind.Random)
        {
            var buffer = new byte[1 << 20];
            while (image.Position < end)
            {
                Random.Shared.NextBytes(buffer);
                await image.WriteAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, end - image.Position)));
            }
            return;
        }
        foreach (var path in await OsFilesAsync())
        {
            if (image.Position >= end)
                return;
            byte[] data;
            try
            {
                data = await File.ReadAllBytesAsync(path);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue; // vanished or unreadable: the next file
            }
            await image.WriteAsync(data.AsMemory(0, (int)Math.Min(data.Length, end - image.Position)));
            image.Position = Math.Min(end, (image.Position + FileAlignment - 1) / FileAlignment * FileAlignment);
        }
        throw new InvalidOperationException($"{string.Join(" and ", OsTrees)} hold less than {bytes >> 20} MiB of files: use a smaller --fill");
    }

    /// <summary>The files of <see cref="OsTrees"/> in the order <see cref="WriteAsync"/> uses them.</summary>
    private static async Task<List<string>> OsFilesAsync()
    {
        var seen = new HashSet<string>(); // device:inode
        var trees = new List<List<string>>();
        foreach (var tree in OsTrees)
        {
            // find prints device and inode, which .NET does not expose; -type f skips symbolic links
            var r = await Tool.RunAsync("find", [tree, "-type", "f", "-printf", @"%D:%i %p\0"]);
            var files = r.StandardOutput.Split('\0', StringSplitOptions.RemoveEmptyEntries)
                .Select(line => line.Split(' ', 2))
                .OrderBy(f => f[1], StringComparer.Ordinal)
                .Where(f => seen.Add(f[0]))
                .Select(f => f[1])
                .ToList();
            trees.Add(files);
        }
        var order = new List<string>();
        for (var i = 0; trees.Any(t => i < t.Count); i++)
            order.AddRange(trees.Where(t => i < t.Count).Select(t => t[i]));
        return order;
    }
}
