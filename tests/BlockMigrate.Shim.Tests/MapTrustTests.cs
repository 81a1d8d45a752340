using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Shim.Tests;

/// <summary>
/// Who may touch a dirty map (issue 10, item 5): maps are 0600; a map or a map directory with the wrong owner
/// or mode, or a symlink, is refused by the orchestrator (DirtyMap) and by the filter (nbdkit) with a clear
/// line; another user can neither open nor change a map; a map that shrinks under a reader gives errors, not
/// SIGBUS.
/// </summary>
[CancelAfter(120_000)]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class MapTrustTests
{
    private const UnixFileMode Rw = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const uint Nobody = 65534;
    private TempDir _dir = null!;
    private string _image = null!;

    [SetUp]
    public void Image()
    {
        _dir = new TempDir("trust");
        _image = _dir["disk.img"];
        using var f = File.Create(_image);
        f.SetLength(4 << 20);
    }

    [TearDown]
    public void Clean() => _dir.Dispose();

    private static bool IsRoot => Environment.UserName == "root" || Tmds.Linux.LibC.geteuid() == 0;

    private Task<(int ExitCode, string Stderr)> Filter(string map) =>
        NbdkitServer.RunExpectingFailureAsync(_dir.Path, NbdkitServer.FilterArgs(_image, map, "64K"));

    [Test]
    public void Maps_are_created_0600_whatever_the_umask()
    {
        using (DirtyMap.Create(_dir["m.map"], 4 << 20, 64 * 1024)) { }
        Assert.That(File.GetUnixFileMode(_dir["m.map"]), Is.EqualTo(Rw));
    }

    [Test]
    public void The_filter_creates_its_map_0600()
    {
        using var shim = ShimHarness.Start(4 << 20);
        Assert.That(File.GetUnixFileMode(shim.MapPath), Is.EqualTo(Rw));
    }

    [TestCase(UnixFileMode.GroupRead | UnixFileMode.GroupWrite)]
    [TestCase(UnixFileMode.OtherRead)]
    public async Task A_map_open_to_group_or_others_is_refused_by_both(UnixFileMode extra)
    {
        using (DirtyMap.Create(_dir["m.map"], 4 << 20, 64 * 1024)) { }
        File.SetUnixFileMode(_dir["m.map"], Rw | extra);
        var e = Assert.Throws<DirtyMapException>(() => DirtyMap.Open(_dir["m.map"]).Dispose())!;
        Assert.That(e.Message, Does.Contain(_dir["m.map"]).And.Contain("chmod 600"));
        Assert.Throws<DirtyMapException>(() => DirtyMap.OpenOrCreate(_dir["m.map"], 4 << 20, 64 * 1024).Dispose());
        var (code, stderr) = await Filter(_dir["m.map"]);
        Assert.That(code, Is.Not.Zero);
        Assert.That(stderr, Does.Contain("gives group or others access").And.Contain("chmod 600"));
    }

    [Test]
    public async Task A_symlink_at_the_map_name_is_refused_by_both_and_not_followed()
    {
        using (DirtyMap.Create(_dir["real.map"], 4 << 20, 64 * 1024)) { }
        File.CreateSymbolicLink(_dir["m.map"], _dir["real.map"]);
        var e = Assert.Throws<DirtyMapException>(() => DirtyMap.Open(_dir["m.map"]).Dispose())!;
        Assert.That(e.Message, Does.Contain("symbolic link"));
        // a symlink to a file that is not there is not created through either
        File.CreateSymbolicLink(_dir["dangling.map"], _dir["victim"]);
        Assert.Throws<DirtyMapException>(() => DirtyMap.OpenOrCreate(_dir["dangling.map"], 4 << 20, 64 * 1024).Dispose());
        Assert.That(File.Exists(_dir["victim"]), Is.False);
        var (code, stderr) = await Filter(_dir["m.map"]);
        Assert.That(code, Is.Not.Zero);
        Assert.That(stderr, Does.Contain("symbolic link"));
        (code, _) = await Filter(_dir["dangling.map"]);
        Assert.That(code, Is.Not.Zero);
        Assert.That(File.Exists(_dir["victim"]), Is.False, "the filter created a map through a symlink");
    }

    [Test]
    public async Task A_symlinked_map_directory_is_refused_by_both()
    {
        Directory.CreateDirectory(_dir["real"]);
        using (DirtyMap.Create(_dir["real/m.map"], 4 << 20, 64 * 1024)) { }
        Directory.CreateSymbolicLink(_dir["link"], _dir["real"]);
        var e = Assert.Throws<DirtyMapException>(() => DirtyMap.Open(_dir["link/m.map"]).Dispose())!;
        Assert.That(e.Message, Does.Contain("symbolic link"));
        var (code, stderr) = await Filter(_dir["link/m.map"]);
        Assert.That(code, Is.Not.Zero);
        Assert.That(stderr, Does.Contain("symbolic link"));
    }

    [TestCase("0770")]
    [TestCase("1777")]
    [TestCase("0757")]
    public async Task A_map_directory_writable_by_group_or_others_is_refused_by_both(string mode)
    {
        var dir = _dir["maps"];
        Directory.CreateDirectory(dir);
        using (DirtyMap.Create(Path.Combine(dir, "m.map"), 4 << 20, 64 * 1024)) { }
        File.SetUnixFileMode(dir, (UnixFileMode)Convert.ToInt32(mode, 8));
        var e = Assert.Throws<DirtyMapException>(() => DirtyMap.Open(Path.Combine(dir, "m.map")).Dispose())!;
        Assert.That(e.Message, Does.Contain("writable by group or others").And.Contain("chmod go-w " + dir));
        Assert.Throws<DirtyMapException>(() => DirtyMap.Create(Path.Combine(dir, "new.map"), 4 << 20, 64 * 1024).Dispose());
        var (code, stderr) = await Filter(Path.Combine(dir, "other.map"));
        Assert.That(code, Is.Not.Zero);
        Assert.That(stderr, Does.Contain("writable by group or others"));
        Assert.That(File.Exists(Path.Combine(dir, "new.map")) || File.Exists(Path.Combine(dir, "other.map")), Is.False);
    }

    [Test]
    public async Task A_map_or_directory_owned_by_another_user_is_refused_by_both()
    {
        if (!IsRoot) Assert.Ignore("needs root to chown");
        using (DirtyMap.Create(_dir["m.map"], 4 << 20, 64 * 1024)) { }
        Chown(_dir["m.map"], Nobody);
        var e = Assert.Throws<DirtyMapException>(() => DirtyMap.Open(_dir["m.map"]).Dispose())!;
        Assert.That(e.Message, Does.Contain($"owned by uid {Nobody}"));
        var (code, stderr) = await Filter(_dir["m.map"]);
        Assert.That(code, Is.Not.Zero);
        Assert.That(stderr, Does.Contain($"owned by uid {Nobody}"));

        // a directory somebody else made first (a planted /dev/shm/blockmigrate)
        var planted = _dir["planted"];
        Directory.CreateDirectory(planted);
        Chown(planted, Nobody);
        e = Assert.Throws<DirtyMapException>(() => DirtyMap.OpenOrCreate(Path.Combine(planted, "vm.map"), 4 << 20, 64 * 1024).Dispose())!;
        Assert.That(e.Message, Does.Contain($"is owned by uid {Nobody}"));
        (code, stderr) = await Filter(Path.Combine(planted, "vm.map"));
        Assert.That(code, Is.Not.Zero);
        Assert.That(stderr, Does.Contain($"is owned by uid {Nobody}"));
        Assert.That(Directory.GetFiles(planted), Is.Empty);
    }

    [Test]
    public async Task Another_user_can_neither_read_nor_change_a_map()
    {
        if (!IsRoot) Assert.Ignore("needs root to switch users");
        using var shim = ShimHarness.Start(4 << 20);
        var traverse = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute;
        File.SetUnixFileMode(_dir.Path, traverse);
        File.SetUnixFileMode(shim.Dir.Path, traverse);
        var before = await File.ReadAllBytesAsync(shim.MapPath);
        // user nobody, and a member of the map's group (root's, here): the old docs put QEMU's user in the
        // maps' group, and maps were 0660
        string[] asNobody = ["--reuid=65534", "--regid=0", "--clear-groups"];
        var control = await Tool.RunAsync("setpriv", [.. asNobody, "test", "-x", shim.Dir.Path]);
        Assert.That(control.ExitCode, Is.Zero, "setpriv itself works: " + control.StandardError);
        var read = await Tool.RunAsync("setpriv", [.. asNobody, "cat", shim.MapPath]);
        var write = await Tool.RunAsync("setpriv", [.. asNobody, "truncate", "-s", "0", shim.MapPath]);
        var dd = await Tool.RunAsync("setpriv", [.. asNobody, "dd", "if=/dev/zero", "of=" + shim.MapPath, "bs=4096", "count=1", "conv=notrunc"]);
        Assert.Multiple(() =>
        {
            Assert.That(read.ExitCode, Is.Not.Zero);
            Assert.That(read.StandardError, Does.Contain("Permission denied"));
            Assert.That(write.ExitCode, Is.Not.Zero);
            Assert.That(dd.ExitCode, Is.Not.Zero);
        });
        Assert.That(await File.ReadAllBytesAsync(shim.MapPath), Is.EqualTo(before));
    }

    [Test]
    public void A_map_that_shrinks_under_the_orchestrator_gives_errors_not_SIGBUS()
    {
        using var map = DirtyMap.Create(_dir["m.map"], 4 << 20, 64 * 1024);
        map.MarkBlocks(3, 1);
        using (var f = new FileStream(_dir["m.map"], FileMode.Open, FileAccess.Write)) f.SetLength(4096);
        var e = Assert.Throws<DirtyMapException>(() => map.TakeAll(out _))!;
        Assert.That(e.Message, Does.Contain("shrank"));
        Assert.Throws<DirtyMapException>(() => map.Info());
        Assert.Throws<DirtyMapException>(() => map.DirtyRanges());
        Assert.Throws<DirtyMapException>(() => map.MarkBlocks(1, 1));
        Assert.Throws<DirtyMapException>(() => map.Freeze(TimeSpan.FromSeconds(1)));
        Assert.Throws<DirtyMapException>(() => map.GateRelease(0, 1));
        Assert.Throws<DirtyMapException>(() => map.SetCookie(new byte[DirtyMap.CookieSize]));
        // and opening it again is refused: its header wants more than the file has
        Assert.Throws<DirtyMapException>(() => DirtyMap.Open(_dir["m.map"]).Dispose());
    }

    [Test]
    public async Task A_map_that_shrinks_under_the_shim_fails_writes_and_nbdkit_lives_on()
    {
        using var shim = ShimHarness.Start(4 << 20);
        await shim.QemuIoAsync("write -P 1 0 4k");
        using (var f = new FileStream(shim.MapPath, FileMode.Open, FileAccess.Write)) f.SetLength(4096);
        var w = await Tool.RunAsync("qemu-io", ["-f", "raw", "-c", "write -P 2 0 4k", shim.Uri]);
        Assert.That(w.ExitCode != 0 || w.StandardOutput.Contains("error") || w.StandardError.Length > 0, Is.True,
            "the write succeeded although its block could not be marked: " + w.StandardOutput);
        Assert.That(shim.Server.HasExited, Is.False, "nbdkit died");
        await shim.QemuIoAsync("read -P 1 0 4k");
        Assert.Throws<DirtyMapException>(() => shim.Map.TakeAll(out _));
    }

    private static void Chown(string path, uint uid)
    {
        int rc;
        unsafe
        {
            var z = System.Text.Encoding.UTF8.GetBytes(path + "\0");
            fixed (byte* p = z) rc = Tmds.Linux.LibC.chown(p, uid, uid);
        }
        Assert.That(rc, Is.Zero, $"chown {path}");
    }
}
