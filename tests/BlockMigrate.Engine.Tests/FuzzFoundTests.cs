using System.Text;
using BlockMigrate.Protocol;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// What the fuzzers (tests/BlockMigrate.Fuzz.Tests) found in the decoders, shown end to end against a real
/// <c>blockmigrate receive --once</c>: a malformed Hello gets an Error frame and exit status 1 (never a
/// crash, exit 134), and nothing is written.
/// </summary>
[CancelAfter(60_000)]
public class FuzzFoundTests
{
    [TestCase("""{"version":1,"disks":null}""", "no list of disks")]
    [TestCase("""{"version":1,"disks":[null]}""", "disk entry 0 is null")]
    [TestCase("""{"version":1,"disks":[{"size":1048576,"block_size":65536,"lineage":"00000000000000000000000000000000"}]}""", "has no name")]
    [TestCase("""{"version":1,"disks":[{"name":"vda","size":1048576,"block_size":65536}]}""", "has no lineage")]
    [TestCase("""{"version":1,"disks":[{"name":"vda\n","size":1048576,"block_size":65536,"lineage":"00000000000000000000000000000000"}]}""", "refused disk name")]
    public async Task Malformed_hello_gets_an_error_frame_not_a_crash(string json, string expected)
    {
        using var dir = new TempDir("engine");
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys: null);
        await using (var source = await RawSource.ConnectAsync(receiver.Port))
        {
            await source.SendAsync(FrameType.Hello, Encoding.UTF8.GetBytes(json));
            Assert.That(await source.ErrorAsync(), Does.Contain(expected), receiver.Process.Stderr);
        }
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(20)), Is.EqualTo(1), receiver.Process.Stderr);
        Assert.That(Directory.Exists(dir["dst"]) ? Directory.GetFiles(dir["dst"]) : [], Is.Empty, "nothing written");
    }
}
