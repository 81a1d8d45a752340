namespace BlockMigrate.Engine.Tests;

/// <summary>
/// The libraries log through ILogger with the level on each line (Core/Logging/CoreLog.cs), routed to NLog by
/// the CLI: a warning shows as a warning, the per-round debug lines show with --verbose only.
/// (Standard error is a pipe here: the plain style, "TIME LEVEL logger: message".)
/// </summary>
[CancelAfter(150_000)]
public class LoggingTests
{
    [Test]
    public async Task A_receiver_warning_is_logged_at_warning_level()
    {
        using var dir = new TempDir("logging");
        var keys = new KeyPair(dir.Path);
        File.WriteAllText(keys.Trusted, "# nobody yet\n");
        using var receiver = await ReceiverProcess.StartServiceAsync(dir["dst"], keys);
        Assert.That(receiver.Process.Stderr, Does.Match(@"(?m) WARN  receive: .*lists no keys; every source will be refused$"), receiver.Process.Stderr);
        Assert.That(receiver.Process.Stderr, Does.Match(@"(?m) INFO  receive: listening on "), "information lines stay information");
    }

    /// <summary>An 8 MiB disk, no writer, to a receiver with --once; with <paramref name="delayMs"/>, through
    /// wanem.py delaying each direction that long.</summary>
    private static async Task<MigrateRun> MigrateAsync(int delayMs, params string[] extra)
    {
        using var dir = new TempDir("logging");
        var keys = new KeyPair(dir.Path);
        using var source = SourceShim.Start(dir.Path, 8L << 20, randomBytes: 1 << 20);
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys);
        if (delayMs == 0) return await MigrateRun.RunAsync(source, receiver.Address, keys, extra);
        using var wan = BackgroundProcess.Python("wanem.py", "--listen", "127.0.0.1:0", "--to", receiver.Address, "--delay", $"{delayMs}");
        var port = (await wan.WaitForLineAsync(@"^listening on [^\s]+:(\d+)$", TimeSpan.FromSeconds(20))).Groups[1].Value;
        return await MigrateRun.RunAsync(source, $"127.0.0.1:{port}", keys, extra);
    }

    [Test]
    public async Task Verbose_adds_a_debug_line_per_round_and_warnings_keep_their_level()
    {
        // a downtime target of 8 ms over a path delayed 5 ms each way: the round trip (>= 10 ms) does not fit
        // in half of it, so the warning about it, at warning level (on plain loopback the round trip can be
        // under 0.5 ms: no target a usage check accepts would be sure to warn)
        var run = await MigrateAsync(5, "--verbose", "--max-downtime", "8");

        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        Assert.That(run.Stderr, Does.Match(@"(?m) DEBUG migrate: round 0 sent: \d+ bytes of blocks"), run.Stderr);
        Assert.That(run.Stderr, Does.Match(@"(?m) WARN  migrate: the round trip to the receiver"), run.Stderr);
        Assert.That(run.Stderr, Does.Not.Contain("warning: "), "no level is carried as text any more");
    }

    [Test]
    public async Task Without_verbose_no_debug_line()
    {
        var run = await MigrateAsync(0);
        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        Assert.That(run.Stderr, Does.Not.Contain(" DEBUG "), run.Stderr);
        Assert.That(run.Stderr, Does.Match(@"(?m) INFO  migrate: round 0: "), run.Stderr);
    }
}
