using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// <c>blockmigrate migrate</c>'s hypervisor options, flags and VM file: an admin's mistake is one line
/// on stderr and exit 2 (a usage error: nothing touched), naming the option (see WholeVmMigrationTests for the options at work).
/// </summary>
[TestFixture, CancelAfter(60_000)]
public sealed class MigrateHypervisorOptionsTests
{
    private static readonly string[] Base = ["migrate", "--disk", "vda=/nonexistent.img:/nonexistent.map", "--to", "127.0.0.1:1", "--plaintext"];

    private static async Task<string> FailsWithAsync(params string[] args)
    {
        var r = await Tool.BlockMigrateAsync(args);
        Assert.That(r.ExitCode, Is.EqualTo(2), r.StandardError);
        var lines = r.StandardError.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(1), "one line: " + r.StandardError);
        Assert.That(lines[0], Does.StartWith("blockmigrate: "));
        return lines[0];
    }

    [Test]
    public async Task Qemu_without_its_monitors_names_the_missing_option() =>
        Assert.That(await FailsWithAsync([.. Base, "--hypervisor", "qemu", "--qmp-destination", "/d.qmp"]), Does.Contain("--qmp-source"));

    [Test]
    public async Task Unknown_hypervisor_lists_the_choices() =>
        Assert.That(await FailsWithAsync([.. Base, "--hypervisor", "vmware"]), Does.Contain("qemu, libvirt, xen or none"));

    [Test]
    public async Task Options_of_another_hypervisor_are_refused() =>
        Assert.That(await FailsWithAsync([.. Base, "--hypervisor", "xen", "--xen-domain", "vm0", "--xen-host", "h", "--multifd"]),
            Does.Contain("--multifd does not apply to --hypervisor xen"));

    [Test]
    public async Task Memory_plaintext_is_a_qemu_option() =>
        Assert.That(await FailsWithAsync([.. Base, "--hypervisor", "xen", "--xen-domain", "vm0", "--xen-host", "h", "--memory-plaintext"]),
            Does.Contain("--memory-plaintext does not apply to --hypervisor xen"));

    [Test]
    public async Task Memory_plaintext_is_a_key_of_the_qemu_section()
    {
        using var dir = new TempDir("hv-memplain");
        string Conf(string value) => $"""
            to = 127.0.0.1:1
            plaintext = yes
            [hypervisor qemu]
            qmp-source = /nonexistent-src.qmp
            qmp-destination = /nonexistent-dst.qmp
            migration-uri = tcp:127.0.0.1:1
            memory-plaintext = {value}
            [disk vda]
            image = /nonexistent.img
            """;
        File.WriteAllText(dir["vm.conf"], Conf("perhaps"));
        Assert.That(await FailsWithAsync("migrate", "--config", dir["vm.conf"]), Does.Contain("memory-plaintext = perhaps: expected true or false"));
        File.WriteAllText(dir["vm.conf"], Conf("true"));
        var r = await Tool.BlockMigrateAsync("migrate", "--config", dir["vm.conf"]);
        Assert.That(r.ExitCode, Is.EqualTo(1));
        Assert.That(r.StandardError.TrimEnd().Split('\n')[^1], Does.StartWith("blockmigrate: disk vda:"), "the key is known; the disk fails next");
    }

    [Test]
    public async Task Postcopy_with_multifd_is_refused() =>
        Assert.That(await FailsWithAsync([.. Base, "--hypervisor", "qemu", "--qmp-source", "/s", "--qmp-destination", "/d",
            "--migration-uri", "unix:/m", "--postcopy", "--multifd"]), Does.Contain("--postcopy cannot be combined with --multifd"));

    [Test]
    public async Task Postcopy_is_a_qemu_option() =>
        Assert.That(await FailsWithAsync([.. Base, "--hypervisor", "xen", "--xen-domain", "vm0", "--xen-host", "h", "--postcopy"]),
            Does.Contain("--postcopy does not apply to --hypervisor xen"));

    [Test]
    public async Task Bad_memory_compression_is_refused() =>
        Assert.That(await FailsWithAsync([.. Base, "--hypervisor", "qemu", "--qmp-source", "/s", "--qmp-destination", "/d",
            "--migration-uri", "unix:/m", "--memory-compression", "lz4"]), Does.Contain("--memory-compression"));

    [Test]
    public async Task Vm_file_section_supplies_the_options_and_unknown_keys_are_named()
    {
        using var dir = new TempDir("hv-opts");
        File.WriteAllText(dir["vm.conf"], """
            to = 127.0.0.1:1
            plaintext = yes
            [hypervisor xen]
            xen-domain = vm0
            xen-hsot = typo.example
            [disk vda]
            image = /nonexistent.img
            """);
        Assert.That(await FailsWithAsync("migrate", "--config", dir["vm.conf"]), Does.Contain("unknown key 'xen-hsot'"));

        File.WriteAllText(dir["vm.conf"], """
            to = 127.0.0.1:1
            plaintext = yes
            [hypervisor xen]
            xen-domain = vm0
            [disk vda]
            image = /nonexistent.img
            """);
        // the lone section picks xen; its domain is taken from the file, the host is still missing
        Assert.That(await FailsWithAsync("migrate", "--config", dir["vm.conf"]), Does.Contain("--xen-host"));
        // a flag completes it; then the disk is the next thing to fail, so the hypervisor part bound
        var r = await Tool.BlockMigrateAsync("migrate", "--config", dir["vm.conf"], "--xen-host", "dst");
        Assert.That(r.ExitCode, Is.EqualTo(1));
        Assert.That(r.StandardError.TrimEnd().Split('\n')[^1], Does.StartWith("blockmigrate: disk vda:"));
    }
}
