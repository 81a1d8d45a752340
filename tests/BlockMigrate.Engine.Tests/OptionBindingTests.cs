using System.CommandLine;
using System.Text.RegularExpressions;
using BlockMigrate.Cli.Commands;
using BlockMigrate.Cli.Config;
using BlockMigrate.Receiver;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// The one binder (Cli/Config/Setting.cs, Binder.cs): every option of migrate and receive binds the same
/// from its flag and from its config key, its default is the options record's and is stated once in
/// --help, and every bad value or key is a usage error (exit 2, one line).
/// </summary>
[CancelAfter(120_000)]
public class OptionBindingTests
{
    /// <summary>A value for each option that is not its default (so a key that did not bind would show).</summary>
    private static readonly Dictionary<string, string> Samples = new()
    {
        ["--to"] = "dst.example:7500", ["--key"] = "/etc/blockmigrate/host.key",
        ["--peer-fingerprint"] = "SHA256:" + new string('A', 43), ["--known-hosts"] = "/etc/blockmigrate/known_hosts",
        ["--bandwidth"] = "20M", ["--max-downtime"] = "150", ["--max-rounds"] = "7", ["--timeout"] = "600",
        ["--connect-timeout"] = "9", ["--codec"] = "zstd", ["--switchover"] = "commit", ["--timeline"] = "/tmp/timeline.svg",
        ["--hypervisor"] = "xen",
        ["--qmp-source"] = "/run/src.qmp", ["--qmp-destination"] = "/run/dst.qmp", ["--migration-uri"] = "tcp:dst:4444",
        ["--incoming-uri"] = "tcp:0.0.0.0:4444", ["--memory-bandwidth"] = "100M", ["--downtime-limit"] = "200",
        ["--multifd-channels"] = "4", ["--memory-compression"] = "zlib",
        ["--xen-domain"] = "vm0", ["--xen-host"] = "dst", ["--xen-ssh"] = "ssh -p 2222", ["--xl"] = "/usr/sbin/xl",
        ["--xen-remote"] = "ssh dst", ["--xen-config"] = "/etc/xen/vm0.cfg",
        ["--listen"] = "127.0.0.1:7999", ["--image-dir"] = "/srv/images", ["--trusted"] = "/etc/blockmigrate/trusted",
        ["--gate-map-dir"] = "/dev/shm/elsewhere", ["--handshake-timeout"] = "2.5", ["--max-pending-handshakes"] = "8",
        ["--seed"] = "/srv/templates/debian12.img", ["--seed-dir"] = "/srv/templates",
    };

    private static IEnumerable<TestCaseData> Keyed()
    {
        foreach (var s in MigrateCommand.Settings.Where(s => s.Key != null))
            yield return new TestCaseData("migrate", s, null).SetName($"migrate {s.Flag} = {s.Key}");
        foreach (var s in MigrateCommand.Hypervisor.QemuSettings)
            yield return new TestCaseData("migrate", s, "qemu").SetName($"migrate {s.Flag} = [hypervisor qemu] {s.Key}");
        foreach (var s in MigrateCommand.Hypervisor.XenSettings)
            yield return new TestCaseData("migrate", s, "xen").SetName($"migrate {s.Flag} = [hypervisor xen] {s.Key}");
        yield return new TestCaseData("migrate", MigrateCommand.Hypervisor.Kind, null).SetName("migrate --hypervisor = hypervisor");
        foreach (var s in ReceiveCommand.Settings.Where(s => s.Key != null))
            yield return new TestCaseData("receive", s, null).SetName($"receive {s.Flag} = {s.Key}");
    }

    private static Binder Bind(string command, string[] args)
    {
        var c = command == "migrate" ? MigrateCommand.Create() : ReceiveCommand.Create();
        var parse = c.Parse(args);
        Assert.That(parse.Errors, Is.Empty, string.Join("; ", parse.Errors.Select(e => e.Message)));
        return new Binder(parse, c.Options.OfType<Option<string?>>().Single(o => o.Name == "--config"));
    }

    [TestCaseSource(nameof(Keyed))]
    public void Flag_and_config_key_give_the_same_value(string command, Setting s, string? section)
    {
        using var dir = new TempDir("binder");
        var sample = s is Switch ? null : Samples[s.Flag];
        var fromFlag = s.BoxedValue(Bind(command, sample is null ? [s.Flag] : [s.Flag, sample]), null);

        File.WriteAllText(dir["vm.conf"], section is null ? $"{s.Key} = {sample ?? "true"}\n" : $"[hypervisor {section}]\n{s.Key} = {sample ?? "yes"}\n");
        var b = Bind(command, ["--config", dir["vm.conf"]]);
        var values = section is null ? null : b.File.Sections.Single().Values;
        var fromFile = s.BoxedValue(b, values);

        Assert.That(fromFile, Is.EqualTo(fromFlag));
        Assert.That(fromFile, Is.Not.EqualTo(s.BoxedDefault), "the sample differs from the default, so the key did bind");
        Assert.That(s.BoxedValue(Bind(command, []), values is null ? null : new Dictionary<string, string>()), Is.EqualTo(s.BoxedDefault), "neither given: the default");
    }

    [Test]
    public void A_flag_wins_over_the_file()
    {
        using var dir = new TempDir("binder");
        File.WriteAllText(dir["vm.conf"], "max-downtime = 150\n");
        Assert.That(Bind("migrate", ["--config", dir["vm.conf"], "--max-downtime", "90"]).Get(MigrateCommand.MaxDowntime), Is.EqualTo(90));
    }

    [Test]
    public void Migrate_defaults_are_the_options_records()
    {
        var (options, hypervisor, redirection) = MigrateCommand.Bind(Bind("migrate", ["--to", "h:1", "--plaintext"]), ["vda=/i.img:/m.map"]);
        var expected = new MigrationOptions { Disks = options.Disks, Host = "h", Port = 1, Plaintext = true };
        Assert.That(options, Is.EqualTo(expected));
        Assert.That(hypervisor.Kind, Is.EqualTo(Hypervisors.HypervisorKind.None));
        Assert.That(redirection, Is.Null);
    }

    [Test]
    public void Seed_is_repeatable_and_comma_separated_and_flags_replace_the_files_list()
    {
        using var dir = new TempDir("binder");
        File.WriteAllText(dir["r.conf"], "image-dir = /srv/images\nseed = /t/a.img, /t/b.img\n");
        Assert.That(ReceiveCommand.Bind(Bind("receive", ["--config", dir["r.conf"]])).Seeds, Is.EqualTo(new[] { "/t/a.img", "/t/b.img" }));
        Assert.That(ReceiveCommand.Bind(Bind("receive", ["--config", dir["r.conf"], "--seed", "/t/c.img", "--seed", "/t/d.img,/t/e.img"])).Seeds,
            Is.EqualTo(new[] { "/t/c.img", "/t/d.img", "/t/e.img" }));
    }

    [Test]
    public void Receive_defaults_are_the_options_records()
    {
        var options = ReceiveCommand.Bind(Bind("receive", ["--image-dir", "/srv/images"]));
        Assert.That(options, Is.EqualTo(new ReceiverOptions { ImageDir = "/srv/images" }));
    }

    [Test]
    public void Qemu_defaults_are_the_options_records()
    {
        var hv = MigrateCommand.Hypervisor.Bind(Bind("migrate", ["--hypervisor", "qemu", "--qmp-source", "/s", "--qmp-destination", "/d", "--migration-uri", "unix:/m"]));
        Assert.That(hv.Qemu, Is.EqualTo(new Hypervisors.Qemu.QemuOptions { SourceQmp = "/s", DestinationQmp = "/d", MigrationUri = "unix:/m" }));
    }

    [Test]
    public void Postcopy_binds_to_the_qemu_options()
    {
        var hv = MigrateCommand.Hypervisor.Bind(Bind("migrate", ["--hypervisor", "qemu", "--qmp-source", "/s", "--qmp-destination", "/d", "--migration-uri", "unix:/m", "--postcopy"]));
        Assert.That(hv.Qemu!.Postcopy, Is.True);
    }

    [TestCase("migrate")]
    [TestCase("receive")]
    public void Every_default_is_stated_once_in_help(string command)
    {
        var c = command == "migrate" ? MigrateCommand.Create() : ReceiveCommand.Create();
        foreach (var o in c.Options)
            Assert.That(Regex.Matches(o.Description ?? "", @"\(default|default:|; default\)").Count, Is.LessThanOrEqualTo(1), $"{o.Name}: {o.Description}");
        IEnumerable<Setting> settings = command == "migrate" ? [.. MigrateCommand.Settings, .. MigrateCommand.Hypervisor.All] : ReceiveCommand.Settings;
        foreach (var s in settings.Where(s => s.DefaultText != null))
            Assert.That(s.Option.Description, Does.EndWith($"(default {s.DefaultText})"), s.Flag);
    }

    private static readonly string[] Base = ["migrate", "--disk", "vda=/nonexistent.img:/nonexistent.map", "--to", "127.0.0.1:1", "--plaintext"];

    [TestCase("--max-downtime", "abc", "--max-downtime 'abc': not a number")]
    [TestCase("--max-downtime", "0", "--max-downtime 0: expected a positive number of ms")]
    [TestCase("--max-rounds", "0", "--max-rounds 0: expected at least 1")]
    [TestCase("--connect-timeout", "-3", "--connect-timeout: expected a positive number of seconds")]
    [TestCase("--switchover", "later", "--switchover 'later': expected gate or commit")]
    [TestCase("--codec", "brotli", "--codec 'brotli': expected auto, lz4 or zstd")]
    [TestCase("--bandwidth", "fast", "--bandwidth 'fast': bad rate 'fast'")]
    [TestCase("--peer-fingerprint", "MD5:xx", "--peer-fingerprint 'MD5:xx': expected SHA256:")]
    [TestCase("--hypervisor", "vmware", "qemu, libvirt, xen or none")]
    [TestCase("--timeline", "/nonexistent-dir/migration.svg", "--timeline '/nonexistent-dir/migration.svg': no directory /nonexistent-dir")]
    [TestCase("--timeline", "/tmp", "--timeline '/tmp': is a directory")]
    public async Task A_bad_flag_value_is_a_usage_error(string flag, string value, string message) =>
        await UsageErrorAsync([.. Base, flag, value], message);

    [TestCase("max-downtime = soon", "vm.conf: max-downtime = soon: not a number")]
    [TestCase("plaintext = perhaps", "vm.conf: plaintext = perhaps: expected true or false")]
    [TestCase("codec = brotli", "vm.conf: codec = brotli: expected auto, lz4 or zstd")]
    [TestCase("max-dowtnime = 100", "unknown key 'max-dowtnime'")]
    [TestCase("[hypervisor qemu]\nqmp-source = /s\nqmp-destination = /d\nmigration-uri = unix:/m\nmultifd-channels = 300", "qemu: 300 multifd channels: use 1 to 255")]
    [TestCase("[disk vdb]\nmap = /m", "[disk vdb] has no image")]
    [TestCase("this is not a setting", "expected 'key = value'")]
    public async Task A_bad_config_value_or_key_is_a_usage_error(string lines, string message)
    {
        using var dir = new TempDir("binder");
        File.WriteAllText(dir["vm.conf"], lines + "\n");
        // no --plaintext here: a flag would win over the file's plaintext key
        await UsageErrorAsync(["migrate", "--disk", "vda=/nonexistent.img:/nonexistent.map", "--to", "127.0.0.1:1",
            "--peer-fingerprint", Samples["--peer-fingerprint"], "--config", dir["vm.conf"]], message);
    }

    [TestCase("--handshake-timeout", "0", "--handshake-timeout: expected 0.1 to 3600 seconds")]
    [TestCase("--max-pending-handshakes", "many", "--max-pending-handshakes 'many': not a number")]
    [TestCase("--listen", "1.2.3.4:99999", "99999")]
    public async Task A_bad_receive_option_is_a_usage_error(string flag, string value, string message) =>
        await UsageErrorAsync(["receive", "--image-dir", "/nonexistent", "--once", flag, value], message);

    private static async Task UsageErrorAsync(string[] args, string message)
    {
        var r = await Tool.BlockMigrateAsync(args);
        var lines = r.StandardError.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(r.ExitCode, Is.EqualTo(2), r.StandardError);
        Assert.That(lines, Has.Length.EqualTo(1), "one line: " + r.StandardError);
        Assert.That(lines[0], Does.StartWith("blockmigrate: ").And.Contain(message));
    }
}
