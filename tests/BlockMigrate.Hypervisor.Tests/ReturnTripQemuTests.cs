using System.Security.Cryptography;
using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// The return trip with a real guest (issue 14 part 1): a QEMU guest writing sequence-numbered blocks is
/// moved A → B (gate mode), runs at B, and is moved back B → A. A's receiver finds A's image (its source
/// image, recorded "handed-away" at the first commit) and keeps it: the return sends only what the guest
/// wrote at B; no write is lost either way and the rest of the disk is identical.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class ReturnTripQemuTests
{
    private const int GuestBlocks = 4096;        // 16 MiB written round-robin by the guest
    private const long FillBytes = 32L << 20;    // the rest: random data, never written by the guest
    private const long DiskBytes = GuestBlocks * (long)GuestDisk.BlockSize + FillBytes;

    private static List<string> MigrateArgs(TwoHostBed bed, string disk, string to, string sourceQmp, QemuGuest destination, string sock) =>
    [
        "migrate", "--disk", disk, "--to", to, "--key", bed.Keys.SourceKey, "--peer-fingerprint", bed.Keys.ReceiverFingerprint,
        "--json", "--timeout", "200", "--hypervisor", "qemu", "--qmp-source", sourceQmp, "--qmp-destination", destination.QmpSocket,
        "--migration-uri", "unix:" + sock, "--incoming-uri", "unix:" + sock,
    ];

    private static byte[] FillHash(string image)
    {
        using var f = File.OpenRead(image);
        f.Position = DiskBytes - FillBytes;
        return SHA256.HashData(f);
    }

    [Test, CancelAfter(420_000)]
    public async Task Guest_goes_A_to_B_and_back_and_the_return_sends_only_what_it_wrote_at_B(CancellationToken ct)
    {
        using var bed = await TwoHostBed.StartAsync(new TwoHostBedOptions
        {
            DirTag = "vm-return", DiskBytes = DiskBytes, FillOffset = DiskBytes - FillBytes, FillBytes = FillBytes,
            GuestBlocks = GuestBlocks, SourceInImageDir = true, TeardownLog = line => TestContext.Out.WriteLine(line),
        });

        // A → B
        var atB = bed.StartDestination("b1");
        var (receiverB, portB) = await bed.StartReceiverAsync();
        var first = bed.Own(BackgroundProcess.Cli(MigrateArgs(bed, $"vda={bed.SourceImage}:{bed.SourceMap}", $"127.0.0.1:{portB}",
            bed.Source.QmpSocket, atB, bed.Dir["mig1.sock"]).ToArray()));
        Assert.That(await WholeVmTestbed.ExitOfAsync(first, TimeSpan.FromSeconds(220)), Is.Zero, $"migrate: {first.Stderr}\nreceiver: {receiverB.Stderr}");
        var firstReport = WholeVmTestbed.Report(first);
        var stoppedAtA = bed.Source.Serial.LastProgress();
        Assert.That(first.Stderr, Does.Contain("recorded " + bed.SourceImage + " as generation 1"));
        using (var gate = DirtyMap.Open(bed.DestinationMap))
            Assert.That(gate.GetCookie()[31], Is.EqualTo((byte)4), "B's map is returnable");

        // the guest runs at B for a while
        var resumedAtB = await atB.Serial.WaitForProgressBeyondAsync(stoppedAtA, TimeSpan.FromSeconds(60));
        await atB.Serial.WaitForProgressBeyondAsync(resumedAtB + 300, TimeSpan.FromSeconds(90));

        // B → A: A's shim in gate mode on A's image, its map in A's receiver's gate-map directory
        var aGates = Directory.CreateDirectory(bed.Dir["agates"]).FullName;
        using (var map = DirtyMap.Create(Path.Combine(aGates, "vda.map"), (ulong)DiskBytes, GuestDisk.BlockSize))
            map.SetState(MapState.Gate);
        var aShim = bed.Own(NbdkitServer.Start(bed.Dir.Path, NbdkitServer.FilterArgs(bed.SourceImage, Path.Combine(aGates, "vda.map"), gate: true)));
        var atA = bed.Own(QemuGuest.Start(bed.Dir.Path, bed.GuestOptions("a2", aShim.Socket, null, incoming: true)));
        var receiverA = bed.Own(BackgroundProcess.Cli("receive", "--listen", "127.0.0.1:0", "--image-dir", bed.SourceImageDir, "--once",
            "--gate-map-dir", aGates, "--key", bed.Keys.ReceiverKey, "--trusted", bed.Keys.Trusted));
        var portA = (await receiverA.WaitForLineAsync(@"^listening on [^\s]+:(\d+)$", TimeSpan.FromSeconds(30))).Groups[1].Value;
        var back = bed.Own(BackgroundProcess.Cli(MigrateArgs(bed, $"vda={bed.DestinationImage}:{bed.DestinationMap}", $"127.0.0.1:{portA}",
            atB.QmpSocket, atA, bed.Dir["mig2.sock"]).ToArray()));
        Assert.That(await WholeVmTestbed.ExitOfAsync(back, TimeSpan.FromSeconds(220)), Is.Zero, $"migrate back: {back.Stderr}\nreceiver A: {receiverA.Stderr}");
        var backReport = WholeVmTestbed.Report(back);
        TestContext.Out.WriteLine($"first trip: {firstReport}\nreturn: {backReport}");
        var stoppedAtB = atB.Serial.LastProgress();

        Assert.That(receiverA.Stderr, Does.Contain("return base accepted"));
        Assert.That(backReport.GetProperty("return_base_blocks").GetInt64(), Is.GreaterThan(0));
        Assert.That(backReport.GetProperty("bytes_of_data").GetInt64(), Is.LessThan(FillBytes / 4), "the fill is not sent again");
        Assert.That(backReport.GetProperty("bytes_on_wire").GetInt64(), Is.LessThan(firstReport.GetProperty("bytes_on_wire").GetInt64() / 3));
        Assert.That(await WholeVmTestbed.StatusAsync(atB, ct), Is.Not.EqualTo("running"), "B's guest never runs again");

        // the guest goes on at A: every write, newest last, and the rest of the disk as it was
        var resumedAtA = await atA.Serial.WaitForProgressBeyondAsync(stoppedAtB, TimeSpan.FromSeconds(60));
        await atA.Serial.WaitForProgressBeyondAsync(resumedAtA + 150, TimeSpan.FromSeconds(60));
        Assert.That(atA.Serial.Text() + atB.Serial.Text(), Does.Not.Contain("WRITE-ERR"));
        await WholeVmTestbed.StopAsync(atA, ct);
        var verdict = GuestDisk.Verify(bed.SourceImage, GuestBlocks);
        Assert.That(verdict.Ok, verdict.ToString());
        Assert.That(verdict.MaxSeq, Is.GreaterThan(resumedAtA));
        Assert.That(FillHash(bed.SourceImage), Is.EqualTo(FillHash(bed.DestinationImage)), "the part of the disk the guest never wrote");
    }
}
