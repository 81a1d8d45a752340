using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Shim.Tests;

/// <summary>Bad parameters and bad maps: nbdkit refuses with a clear line; the CLI prints one line and exits non-zero.</summary>
[CancelAfter(120_000)]
public class BadInputTests
{
    private TempDir _dir = null!;
    private string _image = null!;

    [SetUp]
    public void Image()
    {
        _dir = new TempDir("bad");
        _image = _dir["disk.img"];
        using var f = File.Create(_image);
        f.SetLength(4 << 20);
    }

    [TearDown]
    public void Clean() => _dir.Dispose();

    [Test]
    public async Task Missing_dirtymap_parameter_is_refused()
    {
        var (code, stderr) = await NbdkitServer.RunExpectingFailureAsync(_dir.Path, ["--filter=" + Repo.Filter, "file", "file=" + _image]);
        Assert.That(code, Is.Not.Zero);
        Assert.That(stderr, Does.Contain("dirtymap"));
    }

    [TestCase("3000")]
    [TestCase("2K")]
    [TestCase("2M")]
    [TestCase("banana")]
    public async Task Bad_blocksize_is_refused(string blockSize)
    {
        var (code, stderr) = await NbdkitServer.RunExpectingFailureAsync(_dir.Path, NbdkitServer.FilterArgs(_image, _dir["m.map"], blockSize));
        Assert.That(code, Is.Not.Zero);
        Assert.That(stderr, Does.Contain("blocksize"));
        Assert.That(File.Exists(_dir["m.map"]), Is.False);
    }

    [Test]
    public async Task Map_of_other_geometry_is_refused_and_left_alone()
    {
        DirtyMap.Create(_dir["m.map"], 8 << 20, 64 * 1024).Dispose();
        var before = await File.ReadAllBytesAsync(_dir["m.map"]);
        var (code, stderr) = await NbdkitServer.RunExpectingFailureAsync(_dir.Path, NbdkitServer.FilterArgs(_image, _dir["m.map"]));
        Assert.That(code, Is.Not.Zero);
        Assert.That(stderr, Does.Contain("m.map"));
        Assert.That(await File.ReadAllBytesAsync(_dir["m.map"]), Is.EqualTo(before));
    }

    [Test]
    public async Task Corrupt_map_is_refused()
    {
        await File.WriteAllBytesAsync(_dir["m.map"], Enumerable.Repeat((byte)0x42, 16384).ToArray());
        var (code, stderr) = await NbdkitServer.RunExpectingFailureAsync(_dir.Path, NbdkitServer.FilterArgs(_image, _dir["m.map"]));
        Assert.That(code, Is.Not.Zero);
        Assert.That(stderr, Does.Contain("m.map"));
    }

    [Test]
    public async Task Existing_map_of_matching_geometry_is_reused_with_its_bits()
    {
        using (var m = DirtyMap.Create(_dir["m.map"], 4 << 20, 64 * 1024)) m.MarkBlocks(9, 1);
        using var server = NbdkitServer.Start(_dir.Path, NbdkitServer.FilterArgs(_image, _dir["m.map"], "64K"));
        await Tool.CheckAsync("qemu-io", ["-f", "raw", "-c", "write -P 3 0 512", server.Uri]);
        using var map = DirtyMap.Open(_dir["m.map"]);
        Assert.That(map.DirtyRanges(), Is.EqualTo(new[] { new BlockRange(0, 0), new BlockRange(9, 9) }));
    }

    [Test]
    public async Task Default_block_size_is_4K()
    {
        using var server = NbdkitServer.Start(_dir.Path, NbdkitServer.FilterArgs(_image, _dir["m.map"]));
        await Tool.CheckAsync("qemu-io", ["-f", "raw", "-c", "write -P 3 8192 4096", server.Uri]);
        using var map = DirtyMap.Open(_dir["m.map"]);
        Assert.That(map.BlockSize, Is.EqualTo(4096));
        Assert.That(map.DirtyRanges(), Is.EqualTo(new[] { new BlockRange(2, 2) }));
    }

    [Test]
    public async Task Map_command_on_missing_file_prints_one_line()
    {
        var r = await Tool.BlockMigrateAsync("map", _dir["nope.map"]);
        Assert.That(r.ExitCode, Is.Not.Zero);
        Assert.That(r.StandardError.Trim().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(r.StandardError, Does.Contain("nope.map"));
    }

    [Test]
    public async Task Map_command_on_corrupt_file_prints_one_line()
    {
        await File.WriteAllBytesAsync(_dir["bad.map"], new byte[100]);
        var r = await Tool.BlockMigrateAsync("map", "--json", _dir["bad.map"]);
        Assert.That(r.ExitCode, Is.Not.Zero);
        Assert.That(r.StandardError.Trim().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(r.StandardOutput, Is.Empty);
    }

    [Test]
    public async Task Map_command_with_unknown_flag_is_a_usage_error()
    {
        var r = await Tool.BlockMigrateAsync("map", "--bogus", _dir["x.map"]);
        Assert.That(r.ExitCode, Is.EqualTo(2));
    }
}
