using BlockMigrate.TestSupport;
using BlockMigrate.Transport;

namespace BlockMigrate.Engine.Tests;

/// <summary>Both ends authenticate with pinned keys; any mismatch is one clear line on each side and nothing is sent.</summary>
[CancelAfter(60_000)]
public class AuthenticationTests
{
    [Test]
    public async Task Source_refuses_a_receiver_whose_key_is_not_the_pinned_one()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, 4L << 20, 1 << 20);
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys);
        using var impostor = NodeKey.Generate(dir["impostor.pem"], "impostor");

        var run = await MigrateRun.RunArgsAsync("--disk", source.DiskArg(), "--to", receiver.Address, "--key", keys.SourceKey, "--peer-fingerprint", impostor.Fingerprint);

        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.Error, Does.Contain($"presented key {keys.ReceiverFingerprint}, not the pinned {impostor.Fingerprint}"));
        Assert.That(File.Exists(receiver.Image("vda")), Is.False, "nothing sent");
        Assert.That(source.Map.Info().DirtyBlocks, Is.Zero, "the map was not touched");
    }

    [Test]
    public async Task Receiver_refuses_a_source_whose_key_it_does_not_trust()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        File.WriteAllText(keys.Trusted, "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA someone else\n");
        using var source = SourceShim.Start(dir.Path, 4L << 20, 1 << 20);
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys);

        var run = await MigrateRun.RunAsync(source, receiver.Address, keys);

        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.Error, Does.Contain($"refused our key {keys.SourceFingerprint}"));
        await WaitForAsync(() => receiver.Process.Stderr.Contains($"its key {keys.SourceFingerprint} is not in the trusted file"));
        Assert.That(File.Exists(receiver.Image("vda")), Is.False);
    }

    [Test]
    public async Task Plaintext_source_is_refused_by_a_TLS_receiver()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, 4L << 20, 1 << 20);
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys);

        var run = await MigrateRun.RunAsync(source, receiver.Address, null);

        Assert.That(run.ExitCode, Is.EqualTo(1), run.ToString());
        Assert.That(run.Error, Does.Contain("this receiver requires TLS"));
        await WaitForAsync(() => receiver.Process.Stderr.Contains("it wants plaintext"));
    }

    [Test]
    public async Task Migration_without_a_pinned_receiver_key_is_refused_before_connecting()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, 4L << 20, 1 << 20);
        var r = await Tool.BlockMigrateAsync("migrate", "--disk", source.DiskArg(), "--to", "127.0.0.1:9", "--key", keys.SourceKey);
        Assert.That(r.ExitCode, Is.EqualTo(2), "a setting missing: a usage error");
        Assert.That(r.StandardError.Trim(), Does.StartWith("blockmigrate: receiver 127.0.0.1:9 has no pinned key"));
        Assert.That(r.StandardError.Trim().Split('\n'), Has.Length.EqualTo(1), "one line");
    }

    private static async Task WaitForAsync(Func<bool> condition)
    {
        for (var i = 0; i < 100 && !condition(); i++) await Task.Delay(100);
        Assert.That(condition(), Is.True);
    }
}
