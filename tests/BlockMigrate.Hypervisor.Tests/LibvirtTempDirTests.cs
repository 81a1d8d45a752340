using BlockMigrate.Hypervisors.Libvirt;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// <see cref="LibvirtTempDir"/>: a killed run's private directory (with the rewritten domain XML) is removed by
/// the next run, and nothing else is: not a live run's, not one owned by another user, nothing behind a symlink.
/// </summary>
[TestFixture, CancelAfter(60_000), System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class LibvirtTempDirTests
{
    private TempDir _dir = null!;
    private readonly List<string> _said = [];

    private string Parent => _dir["tmp"];

    [SetUp]
    public void Make()
    {
        _dir = new TempDir("lvtmp");
        _said.Clear();
    }

    [TearDown]
    public void Remove()
    {
        Tool.CheckAsync("chmod", ["-R", "u+rwX", _dir.Path]).Wait();
        _dir.Dispose();
    }

    private string Create() => LibvirtTempDir.Create("migrate", _said.Add, Parent);

    /// <summary>A directory as a run of process <paramref name="pid"/> started at <paramref name="ticks"/> leaves it.</summary>
    private string Leftover(int pid, ulong ticks)
    {
        var d = Path.Combine(Parent, $"{pid}-{ticks}-migrate-0123456789abcdef");
        Directory.CreateDirectory(d);
        File.WriteAllText(Path.Combine(d, "domain.xml"), "<domain/>");
        return d;
    }

    private static int DeadPid()
    {
        using var p = System.Diagnostics.Process.Start("true")!;
        p.WaitForExit();
        return p.Id;
    }

    [Test]
    public void A_new_directory_is_private_and_in_the_users_own_directory()
    {
        var d = Create();
        Assert.That(Path.GetDirectoryName(d), Is.EqualTo(Parent));
        Assert.That(File.GetUnixFileMode(d), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute));
        Assert.That(File.GetUnixFileMode(Parent), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute));
        Assert.That(Path.GetFileName(d), Does.StartWith($"{Environment.ProcessId}-"));
    }

    [Test]
    public void The_directory_of_a_killed_run_is_removed_by_the_next_and_a_live_runs_is_kept()
    {
        Directory.CreateDirectory(Parent);
        var dead = Leftover(DeadPid(), 12345);
        var reused = Leftover(Environment.ProcessId, 1); // our PID, but we started at another time: a reused PID
        var live = Create(); // ours, running
        File.WriteAllText(Path.Combine(live, "domain.xml"), "<domain/>");
        var next = Create();
        Assert.That(Directory.Exists(dead), Is.False, string.Join("\n", _said));
        Assert.That(Directory.Exists(reused), Is.False, string.Join("\n", _said));
        Assert.That(File.Exists(Path.Combine(live, "domain.xml")), Is.True, "a running process's directory stays");
        Assert.That(Directory.Exists(next), Is.True);
        Assert.That(_said, Has.Some.StartsWith($"removed the stale temporary directory {dead}"));
    }

    [Test]
    public void Nothing_behind_a_symlink_is_touched()
    {
        var outside = _dir["outside"];
        Directory.CreateDirectory(outside);
        File.WriteAllText(Path.Combine(outside, "precious"), "keep");
        Directory.CreateDirectory(Parent);
        // a stale-looking name that is a symlink to a directory, and a stale directory holding a symlink to a file
        File.CreateSymbolicLink(Path.Combine(Parent, $"{DeadPid()}-1-migrate-x"), outside);
        var stale = Leftover(DeadPid(), 7);
        File.CreateSymbolicLink(Path.Combine(stale, "domain.xml.link"), Path.Combine(outside, "precious"));
        Create();
        Assert.That(File.ReadAllText(Path.Combine(outside, "precious")), Is.EqualTo("keep"));
        Assert.That(Directory.Exists(stale), Is.False, "the stale directory and the symlink in it are gone: " + string.Join("\n", _said));
        Assert.That(_said, Has.Some.Contains("not a directory (a symbolic link or a file)"));
    }

    [Test]
    public void A_stale_directory_of_another_user_is_left()
    {
        Directory.CreateDirectory(Parent);
        var foreign = Leftover(DeadPid(), 9);
        Tool.CheckAsync("chown", ["65534", foreign]).Wait();
        Create();
        Assert.That(File.Exists(Path.Combine(foreign, "domain.xml")), Is.True);
        Assert.That(_said, Has.Some.Contains("owned by uid 65534, not by us"));
    }

    [Test]
    public void A_parent_that_is_a_symlink_is_not_used_or_cleaned()
    {
        var elsewhere = _dir["elsewhere"];
        Directory.CreateDirectory(elsewhere);
        var stale = Path.Combine(elsewhere, $"{DeadPid()}-1-migrate-y");
        Directory.CreateDirectory(stale);
        File.CreateSymbolicLink(Parent, elsewhere);
        var d = Create();
        try
        {
            Assert.That(Directory.Exists(stale), Is.True, "not cleaned through the symlink");
            Assert.That(d, Does.Not.StartWith(Parent).And.Not.StartWith(elsewhere));
            Assert.That(_said, Has.Some.Contains("symbolic link"));
        }
        finally
        {
            Directory.Delete(d, true);
        }
    }

    [Test]
    public void A_parent_others_can_write_is_not_used()
    {
        Directory.CreateDirectory(Parent);
        File.SetUnixFileMode(Parent, (UnixFileMode)Convert.ToInt32("777", 8));
        var stale = Leftover(DeadPid(), 3);
        var d = Create();
        try
        {
            Assert.That(Directory.Exists(stale), Is.True);
            Assert.That(Path.GetDirectoryName(d), Is.Not.EqualTo(Parent));
            Assert.That(_said, Has.Some.Contains("writable by group or others"));
        }
        finally
        {
            Directory.Delete(d, true);
        }
    }
}
