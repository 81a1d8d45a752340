using System.Text.Json;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Shim.Tests;

/// <summary><c>blockmigrate map</c> shows what the shim recorded.</summary>
[CancelAfter(120_000)]
public class MapCommandTests
{
    [Test]
    public async Task Json_lists_geometry_and_dirty_ranges()
    {
        using var shim = ShimHarness.Start(4L << 20);
        await shim.QemuIoAsync("write -P 1 0 4096", "write -P 2 131072 131073");
        var r = await Tool.BlockMigrateAsync("map", "--json", shim.MapPath);
        Assert.That(r.ExitCode, Is.Zero, r.StandardError);
        using var doc = JsonDocument.Parse(r.StandardOutput);
        var o = doc.RootElement;
        Assert.Multiple(() =>
        {
            Assert.That(o.GetProperty("block_size").GetInt64(), Is.EqualTo(65536));
            Assert.That(o.GetProperty("blocks").GetInt64(), Is.EqualTo(64));
            Assert.That(o.GetProperty("dirty_blocks").GetInt64(), Is.EqualTo(4));
            Assert.That(o.GetProperty("owner_pid").GetInt64(), Is.EqualTo(shim.Server.Pid));
            var ranges = o.GetProperty("dirty_ranges").EnumerateArray()
                .Select(a => (a[0].GetInt64(), a[1].GetInt64())).ToArray();
            Assert.That(ranges, Is.EqualTo(new[] { (0L, 0L), (2L, 4L) }));
        });
    }

    [Test]
    public async Task Text_output_names_the_geometry()
    {
        using var shim = ShimHarness.Start(4L << 20);
        await shim.QemuIoAsync("write -P 1 65536 10");
        var r = await Tool.BlockMigrateAsync("map", shim.MapPath);
        Assert.That(r.ExitCode, Is.Zero, r.StandardError);
        Assert.That(r.StandardOutput, Does.Contain("64 blocks of 64 KiB").And.Contain("dirty blocks:  1"));
    }
}
