using BlockMigrate.Protocol;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// The receiver's side of the memory stream's key (docs/hypervisors.md): a key in the Hello is written
/// as QEMU's keys.psk into a private directory named in the Welcome and removed when the session ends;
/// anything but 64 hex digits is refused before it reaches a file.
/// </summary>
[CancelAfter(60_000)]
public class MemoryKeyHandshakeTests
{
    private static readonly DiskOffer Offer = new("vda", 1 << 20, 65536, new string('a', 32), false);

    private static async Task<Frame> HelloAsync(RawSource source, string? memoryKey)
    {
        var hello = new HelloMessage(HelloMessage.CurrentVersion, [Offer], memoryKey);
        await source.SendAsync(FrameType.Hello, ProtocolJson.Encode(hello, ProtocolJson.Default.HelloMessage));
        return await source.Reader.ReadRequiredAsync("welcome", CancellationToken.None);
    }

    [Test, System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public async Task A_memory_key_is_written_for_qemu_in_a_private_directory_and_removed_at_the_end()
    {
        using var dir = new TempDir("memkey");
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys: null);
        var key = Transport.MemoryKey.New();
        string keyDir;
        await using (var source = await RawSource.ConnectAsync(receiver.Port))
        {
            var welcome = ProtocolJson.Decode(await HelloAsync(source, key), FrameType.Welcome, ProtocolJson.Default.WelcomeMessage);
            keyDir = welcome.MemoryKeyDir!;
            Assert.That(keyDir, Is.Not.Null);
            Assert.That(File.GetUnixFileMode(keyDir), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute));
            var psk = Path.Combine(keyDir, "keys.psk");
            Assert.That(File.GetUnixFileMode(psk), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite));
            Assert.That(await File.ReadAllTextAsync(psk), Is.EqualTo($"blockmigrate:{key}\n"));
            // fixed DH parameters, or the destination QEMU spends seconds generating them at object-add
            Assert.That(await File.ReadAllTextAsync(Path.Combine(keyDir, "dh-params.pem")), Is.EqualTo(Transport.MemoryKey.DhParamsPem));
        }
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(20)), Is.EqualTo(1), "no commit");
        Assert.That(Directory.Exists(keyDir), Is.False, "the key is removed when the session ends");
    }

    [Test]
    public async Task No_memory_key_no_directory()
    {
        using var dir = new TempDir("memkey");
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys: null);
        await using var source = await RawSource.ConnectAsync(receiver.Port);
        var welcome = ProtocolJson.Decode(await HelloAsync(source, null), FrameType.Welcome, ProtocolJson.Default.WelcomeMessage);
        Assert.That(welcome.MemoryKeyDir, Is.Null);
    }

    [TestCase("../../../../etc/cron.d/x")]
    [TestCase("abc")]
    [TestCase("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg")]
    [TestCase("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n")]
    public async Task A_memory_key_that_is_not_64_hex_digits_is_refused(string bad)
    {
        using var dir = new TempDir("memkey");
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys: null);
        await using (var source = await RawSource.ConnectAsync(receiver.Port))
        {
            var answer = await HelloAsync(source, bad);
            Assert.That(answer.Type, Is.EqualTo(FrameType.Error));
            Assert.That(System.Text.Encoding.UTF8.GetString(answer.Payload), Does.Contain("not 64 hex digits"));
        }
        Assert.That(await receiver.Process.WaitForExitAsync(TimeSpan.FromSeconds(20)), Is.EqualTo(1));
    }
}
