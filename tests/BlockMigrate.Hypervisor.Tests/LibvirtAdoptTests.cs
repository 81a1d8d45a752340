using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// <c>blockmigrate adopt</c>: a running libvirt domain on a local raw or qcow2 file is put behind the shim
/// without a restart (libvirt block copy + pivot onto the shim's socket), then migrated with
/// <c>--hypervisor libvirt</c>; <c>blockmigrate release</c> moves a disk back to a local file. The guest's
/// sequence-numbered writes must all survive both the pivot and the migration.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class LibvirtAdoptTests
{
    private LibvirtTestbed? _bed;

    [TearDown]
    public void StopEverything()
    {
        _bed?.Dispose();
        _bed = null;
    }

    [TestCase("raw"), TestCase("qcow2")]
    [CancelAfter(300_000)]
    public async Task Adopted_without_a_restart_then_migrated_with_every_write(string format, CancellationToken ct)
    {
        _bed = await LibvirtTestbed.StartAsync("d" + format[0], adopt: format);
        var bed = _bed;
        var disk = format == "raw"
            ? $"<disk type='file' device='disk'><driver name='qemu' type='raw' cache='none'/><source file='{bed.OriginalImage}'/><target dev='vda' bus='virtio'/></disk>"
            : $"<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/><source file='{bed.OriginalImage}'/>" +
              $"<backingStore type='file'><format type='qcow2'/><source file='{bed.BaseImage}'/></backingStore><target dev='vda' bus='virtio'/></disk>";
        await bed.StartGuestAsync(disk, persistent: true);
        var adopt = await Tool.RunAsync("ip", ["netns", "exec", bed.Net.Source, "dotnet", Repo.CliDll, "adopt", "--domain", LibvirtTestbed.Domain,
            "--connect", bed.SourceUri, "--target", "vda", "--socket", bed.SourceShim.Socket]);
        TestContext.Out.WriteLine(adopt.StandardError);
        Assert.That(adopt.ExitCode, Is.Zero, adopt.StandardError);
        var live = await bed.VirshCheckAsync(bed.SourceUri, "dumpxml", LibvirtTestbed.Domain);
        Assert.That(live, Does.Contain(bed.SourceShim.Socket).And.Not.Contain(bed.OriginalImage), "the domain runs on the shim");
        if (format == "qcow2") Assert.That(live, Does.Contain(bed.BaseImage), "and keeps its backing file");
        var inactive = await bed.VirshCheckAsync(bed.SourceUri, "dumpxml", "--inactive", LibvirtTestbed.Domain);
        Assert.That(inactive, Does.Contain(bed.SourceShim.Socket), "the persistent definition follows");
        Assert.That(await bed.StateAsync(bed.SourceUri), Is.EqualTo("running"));
        var at = bed.Serial.LastProgress();
        await bed.Serial.WaitForProgressBeyondAsync(at + 100, TimeSpan.FromSeconds(60)); // writes on, through the shim

        var (receiver, address) = await bed.StartReceiverAsync();
        var migrate = bed.StartMigrate(address, "--migration-uri", $"tcp://{bed.Net.DestinationAddress}", "--memory-plaintext", "--persistent");
        await LibvirtMigrationTests.MigratedAsync(bed, migrate, receiver, format);
        Assert.That(await bed.DefinedAsync(bed.SourceUri), Does.Not.Contain(LibvirtTestbed.Domain));
        Assert.That(await bed.DefinedAsync(bed.DestinationUri), Does.Contain(LibvirtTestbed.Domain));

        // and back to a local file at the destination, still without a restart
        await bed.VirshCheckAsync(bed.DestinationUri, "resume", LibvirtTestbed.Domain);
        var local = bed.Dir[$"back.{format}"];
        var release = await Tool.RunAsync("ip", ["netns", "exec", bed.Net.Source, "dotnet", Repo.CliDll, "release", "--domain", LibvirtTestbed.Domain,
            "--connect", bed.DestinationUri, "--file", local]);
        TestContext.Out.WriteLine(release.StandardError);
        Assert.That(release.ExitCode, Is.Zero, release.StandardError);
        Assert.That(await bed.VirshCheckAsync(bed.DestinationUri, "dumpxml", LibvirtTestbed.Domain), Does.Contain(local).And.Not.Contain(bed.DestinationShim.Socket));
        at = bed.Serial.LastProgress();
        await bed.Serial.WaitForProgressBeyondAsync(at + 100, TimeSpan.FromSeconds(60));
        await bed.VirshCheckAsync(bed.DestinationUri, "suspend", LibvirtTestbed.Domain);
        var verdict = GuestDisk.Verify(await bed.RawViewAsync(local, format), LibvirtTestbed.GuestBlocks);
        Assert.That(verdict.Ok, verdict.ToString());
        Assert.That(verdict.MaxSeq, Is.GreaterThan(at));
    }
}
