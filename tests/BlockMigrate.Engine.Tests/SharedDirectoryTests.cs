using BlockMigrate.Files;
using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// Files root writes in a shared directory (issue 10, item 6): a symlink planted at the name is replaced,
/// never followed, so the file it points to is unchanged; a directory with another owner or open to group
/// or others is not used.
/// </summary>
[CancelAfter(60_000)]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class SharedDirectoryTests
{
    private const string VictimText = "root:x:0:0:do not overwrite me\n";
    private TempDir _dir = null!;

    [SetUp]
    public void Make() => _dir = new TempDir("shared");

    [TearDown]
    public void Clean() => _dir.Dispose();

    private SourceDisk NewDisk(string name = "vda")
    {
        using (var f = File.Create(_dir[name + ".img"])) f.SetLength(4 << 20);
        using (DirtyMap.Create(_dir[name + ".map"], 4 << 20, 64 * 1024)) { }
        return new SourceDisk(0, new DiskSpec(name, _dir[name + ".img"], _dir[name + ".map"]));
    }

    [Test]
    public void A_symlink_planted_at_MAP_outstanding_is_not_followed()
    {
        File.WriteAllText(_dir["victim"], VictimText);
        File.CreateSymbolicLink(_dir["vda.map.outstanding"], _dir["victim"]);
        using var disk = NewDisk();
        disk.Cookie = new ResumeCookie(ResumeCookie.NewLineage(), new byte[12], CookieState.Running);
        disk.Map.MarkBlocks(0, 5);
        disk.Take(out var taken);
        Assert.That(taken, Is.EqualTo(5UL));
        disk.SyncOutstanding();

        Assert.That(File.ReadAllText(_dir["victim"]), Is.EqualTo(VictimText), "root wrote through the planted symlink");
        var info = new FileInfo(_dir["vda.map.outstanding"]);
        Assert.That(info.LinkTarget, Is.Null, "the record replaced the symlink");
        Assert.That(info.UnixFileMode, Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite));
        Assert.That(info.Length, Is.EqualTo(32 + 8 * (long)disk.Map.Words));
    }

    [Test]
    public void A_symlinked_outstanding_record_is_not_read_and_the_victim_survives_the_give_back()
    {
        var lineage = ResumeCookie.NewLineage();
        using var disk = NewDisk();
        // a "valid" record of this lineage, but reached through a symlink: refused
        var record = new byte[32 + 8 * (int)disk.Map.Words];
        "BMOUT1\0\0"u8.CopyTo(record);
        lineage.CopyTo(record, 8);
        record[24] = 1;
        record[32] = 0xff;
        File.WriteAllBytes(_dir["elsewhere"], record);
        File.CreateSymbolicLink(_dir["vda.map.outstanding"], _dir["elsewhere"]);
        Assert.That(disk.RecoverOutstanding(lineage), Is.False);
        Assert.That(disk.Map.Info().DirtyBlocks, Is.Zero);
        disk.GiveBack();
        Assert.That(File.Exists(_dir["elsewhere"]), Is.True, "removing the record removed the symlink's target");
        Assert.That(File.ReadAllBytes(_dir["elsewhere"]), Is.EqualTo(record));
    }

    [Test]
    public void WriteAtomically_replaces_a_planted_symlink_and_leaves_its_target_alone()
    {
        File.WriteAllText(_dir["victim"], VictimText);
        File.CreateSymbolicLink(_dir["status.json"], _dir["victim"]);
        using var dir = TrustedDirectory.Open(_dir.Path, serviceUser: false);
        dir.WriteAtomically("status.json", "{}"u8);
        Assert.That(File.ReadAllText(_dir["victim"]), Is.EqualTo(VictimText));
        Assert.That(new FileInfo(_dir["status.json"]).LinkTarget, Is.Null);
        Assert.That(File.ReadAllText(_dir["status.json"]), Is.EqualTo("{}"));
        Assert.That(Directory.GetFiles(_dir.Path).Select(Path.GetFileName), Is.EquivalentTo(new[] { "victim", "status.json" }), "no temporary left");
        Assert.That(dir.Delete("status.json"), Is.True);
        Assert.That(File.ReadAllText(_dir["victim"]), Is.EqualTo(VictimText));
    }

    [Test]
    public void A_directory_open_to_others_or_a_symlink_or_another_owner_is_not_used()
    {
        var open = _dir["open"];
        Directory.CreateDirectory(open);
        File.SetUnixFileMode(open, (UnixFileMode)Convert.ToInt32("1777", 8));
        var e = Assert.Throws<UntrustedFileException>(() => TrustedDirectory.Open(open, serviceUser: false))!;
        Assert.That(e.Message, Does.Contain("writable by group or others").And.Contain("chmod go-w " + open));

        Directory.CreateSymbolicLink(_dir["link"], _dir.Path);
        e = Assert.Throws<UntrustedFileException>(() => TrustedDirectory.Open(_dir["link"], serviceUser: false))!;
        Assert.That(e.Message, Does.Contain("symbolic link"));

        if (Tmds.Linux.LibC.geteuid() != 0) return;
        var theirs = _dir["theirs"];
        Directory.CreateDirectory(theirs);
        Chown(theirs, 65534);
        e = Assert.Throws<UntrustedFileException>(() => TrustedDirectory.Open(theirs, serviceUser: false))!;
        Assert.That(e.Message, Does.Contain("owned by uid 65534"));
    }

    [Test]
    public async Task Migrate_does_not_publish_its_status_in_a_directory_open_to_others()
    {
        // BLOCKMIGRATE_RUN_DIR/migrations writable by everybody (as a /tmp/blockmigrate-UID made first by another user)
        var planted = _dir["run/migrations"];
        Directory.CreateDirectory(planted);
        File.SetUnixFileMode(planted, (UnixFileMode)Convert.ToInt32("0777", 8));
        var env = new Dictionary<string, string> { ["BLOCKMIGRATE_RUN_DIR"] = _dir["run"] };
        using var source = SourceShim.Start(_dir.Path, 16L << 20, 2 << 20);
        using var receiver = await ReceiverProcess.StartAsync(_dir["dst"], keys: null);
        using var migrate = BackgroundProcess.Cli(env, "migrate", "--disk", source.DiskArg(), "--to", receiver.Address, "--plaintext",
            "--bandwidth", "8M", "--timeout", "100");
        var seen = new HashSet<string>();
        while (!migrate.HasExited)
        {
            foreach (var f in Directory.GetFiles(planted)) seen.Add(Path.GetFileName(f));
            await Task.Delay(50);
        }
        Assert.That(await migrate.WaitForExitAsync(TimeSpan.FromSeconds(90)), Is.Zero, migrate.Stderr);
        Assert.That(seen, Is.Empty, "root wrote into a directory anybody can plant symlinks in");
    }

    private static unsafe void Chown(string path, uint uid)
    {
        var z = System.Text.Encoding.UTF8.GetBytes(path + "\0");
        int rc;
        fixed (byte* p = z) rc = Tmds.Linux.LibC.chown(p, uid, uid);
        Assert.That(rc, Is.Zero, $"chown {path}");
    }
}
