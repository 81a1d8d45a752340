using BlockMigrate.TestSupport;
using BlockMigrate.Transport;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// Keys and trusted files as ssh's StrictModes treats them (issue 10, item 10): a private key readable by
/// group or others, or a trusted / known-hosts file (or its directory) writable by them, is refused with one
/// line naming the file and the fix; keygen makes keys 0600.
/// </summary>
[CancelAfter(60_000)]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class KeyFileModeTests
{
    private const UnixFileMode Rw = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private TempDir _dir = null!;

    [SetUp]
    public void Make() => _dir = new TempDir("keys");

    [TearDown]
    public void Clean() => _dir.Dispose();

    [Test]
    public async Task Keygen_makes_the_key_0600_even_under_a_lax_umask()
    {
        var r = await Tool.RunAsync("sh", ["-c", $"umask 000; exec dotnet '{Repo.CliDll}' keygen --out '{_dir["k.pem"]}'"]);
        Assert.That(r.ExitCode, Is.Zero, r.StandardError);
        Assert.That(File.GetUnixFileMode(_dir["k.pem"]), Is.EqualTo(Rw));
        using var key = NodeKey.Load(_dir["k.pem"]);
    }

    [TestCase(UnixFileMode.GroupRead)]
    [TestCase(UnixFileMode.OtherRead)]
    [TestCase(UnixFileMode.GroupWrite)]
    public async Task A_key_open_to_group_or_others_is_refused(UnixFileMode extra)
    {
        using (NodeKey.Generate(_dir["k.pem"], "t")) { }
        File.SetUnixFileMode(_dir["k.pem"], Rw | extra);
        var e = Assert.Throws<TransportException>(() => NodeKey.Load(_dir["k.pem"]).Dispose())!;
        Assert.That(e.Message, Does.Contain(_dir["k.pem"]).And.Contain("chmod 600 " + _dir["k.pem"]));
        var r = await Tool.BlockMigrateAsync("fingerprint", _dir["k.pem"]);
        Assert.That(r.ExitCode, Is.Not.Zero);
        Assert.That(r.StandardError.Trim().Split('\n'), Has.Length.EqualTo(1), r.StandardError);
        Assert.That(r.StandardError, Does.Contain("chmod 600 " + _dir["k.pem"]));
    }

    [Test]
    public void A_key_owned_by_another_user_is_refused()
    {
        if (Tmds.Linux.LibC.geteuid() != 0) Assert.Ignore("needs root to chown");
        using (NodeKey.Generate(_dir["k.pem"], "t")) { }
        Chown(_dir["k.pem"], 65534);
        var e = Assert.Throws<TransportException>(() => NodeKey.Load(_dir["k.pem"]).Dispose())!;
        Assert.That(e.Message, Does.Contain("owned by uid 65534"));
    }

    [TestCase(UnixFileMode.GroupWrite)]
    [TestCase(UnixFileMode.OtherWrite)]
    public void A_trusted_or_known_hosts_file_writable_by_others_is_refused(UnixFileMode extra)
    {
        using var key = NodeKey.Generate(_dir["k.pem"], "t");
        File.WriteAllText(_dir["trusted"], key.Fingerprint + " source\n");
        File.WriteAllText(_dir["known"], "receiver:7420 " + key.Fingerprint + "\n");
        Assert.That(TrustList.LoadTrusted(_dir["trusted"]).Contains(key.Fingerprint), Is.True, "0644 is fine");
        Assert.That(TrustList.LookupKnownHost(_dir["known"], "receiver", 7420), Is.EqualTo(key.Fingerprint));
        var mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead | extra;
        File.SetUnixFileMode(_dir["trusted"], mode);
        File.SetUnixFileMode(_dir["known"], mode);
        var e = Assert.Throws<TransportException>(() => TrustList.LoadTrusted(_dir["trusted"]))!;
        Assert.That(e.Message, Does.Contain("trusted file " + _dir["trusted"]).And.Contain("chmod go-w " + _dir["trusted"]));
        e = Assert.Throws<TransportException>(() => TrustList.LookupKnownHost(_dir["known"], "receiver", 7420))!;
        Assert.That(e.Message, Does.Contain("known-hosts file " + _dir["known"]).And.Contain("chmod go-w"));
    }

    [Test]
    public void A_trusted_file_in_a_directory_writable_by_others_is_refused()
    {
        var d = _dir["etc"];
        Directory.CreateDirectory(d);
        File.WriteAllText(Path.Combine(d, "trusted"), "# none\n");
        File.SetUnixFileMode(d, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead |
                                UnixFileMode.GroupWrite | UnixFileMode.GroupExecute);
        var e = Assert.Throws<TransportException>(() => TrustList.LoadTrusted(Path.Combine(d, "trusted")))!;
        Assert.That(e.Message, Does.Contain("directory " + d).And.Contain("chmod go-w " + d));
    }

    [Test]
    public void A_trusted_file_owned_by_another_user_is_refused()
    {
        if (Tmds.Linux.LibC.geteuid() != 0) Assert.Ignore("needs root to chown");
        File.WriteAllText(_dir["trusted"], "# none\n");
        Chown(_dir["trusted"], 65534);
        var e = Assert.Throws<TransportException>(() => TrustList.LoadTrusted(_dir["trusted"]))!;
        Assert.That(e.Message, Does.Contain("owned by uid 65534"));
    }

    [Test]
    public async Task The_receiver_does_not_start_with_a_trusted_file_writable_by_others()
    {
        var keys = new KeyPair(_dir.Path);
        Directory.CreateDirectory(_dir["dst"]);
        File.SetUnixFileMode(keys.Trusted, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead | UnixFileMode.OtherWrite);
        var r = await Tool.BlockMigrateAsync("receive", "--listen", "127.0.0.1:0", "--image-dir", _dir["dst"], "--key", keys.ReceiverKey,
            "--trusted", keys.Trusted, "--once");
        Assert.That(r.ExitCode, Is.Not.Zero, r.StandardOutput);
        Assert.That(r.StandardError, Does.Contain("trusted file " + keys.Trusted).And.Contain("chmod go-w"));
    }

    private static unsafe void Chown(string path, uint uid)
    {
        var z = System.Text.Encoding.UTF8.GetBytes(path + "\0");
        int rc;
        fixed (byte* p = z) rc = Tmds.Linux.LibC.chown(p, uid, uid);
        Assert.That(rc, Is.Zero, $"chown {path}");
    }
}
