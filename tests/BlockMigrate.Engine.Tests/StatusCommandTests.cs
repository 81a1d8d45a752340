using System.Diagnostics;
using System.Text.Json;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary><c>blockmigrate status</c> from another shell sees a real migration while it runs (kept slow by
/// a bandwidth cap), and nothing once it has finished; files of dead processes are cleaned up.</summary>
[CancelAfter(120_000)]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class StatusCommandTests
{
    [Test]
    public async Task Status_shows_a_running_migration_and_forgets_it_when_it_ends()
    {
        using var dir = new TempDir("status");
        var env = new Dictionary<string, string> { ["BLOCKMIGRATE_RUN_DIR"] = dir["run"] };
        using var source = SourceShim.Start(dir.Path, 64L << 20, 4 << 20); // 4 MiB of random data at 8 Mbit/s: ~4 s
        using var receiver = await ReceiverProcess.StartAsync(dir["dst"], keys: null);
        using var migrate = BackgroundProcess.Cli(env, "migrate", "--disk", source.DiskArg(), "--to", receiver.Address, "--plaintext",
            "--bandwidth", "8M", "--json", "--timeout", "100");

        JsonElement? seen = null;
        string text = "";
        var clock = Stopwatch.StartNew();
        while (seen is null && !migrate.HasExited && clock.Elapsed < TimeSpan.FromSeconds(60))
        {
            var r = await Status(env, "--json");
            Assert.That(r.ExitCode, Is.Zero, r.StandardError);
            var list = JsonDocument.Parse(r.StandardOutput).RootElement.GetProperty("migrations");
            foreach (var m in list.EnumerateArray())
                if (m.GetProperty("pid").GetInt32() == migrate.Pid && m.GetProperty("phase").GetString() == "bulkcopy"
                    && m.GetProperty("round_bytes_done").GetInt64() > 0)
                {
                    seen = m.Clone();
                    text = (await Status(env)).StandardOutput;
                }
            if (seen is null) await Task.Delay(200);
        }
        Assert.That(seen, Is.Not.Null, "status never showed the migration copying: " + migrate.Stderr);
        var s = seen!.Value;
        TestContext.Out.WriteLine(s.ToString());
        TestContext.Out.WriteLine(text);
        Assert.Multiple(() =>
        {
            Assert.That(s.GetProperty("to").GetString(), Is.EqualTo(receiver.Address));
            Assert.That(s.GetProperty("disks").EnumerateArray().Select(d => d.GetString()), Is.EqualTo(new[] { "vda" }));
            Assert.That(s.GetProperty("percent").GetDouble(), Is.InRange(0.0, 100.0));
            Assert.That(s.GetProperty("wire_bytes_per_second").GetDouble(), Is.GreaterThanOrEqualTo(0));
            Assert.That(s.TryGetProperty("throttle_bytes_per_second", out _), Is.True);
            Assert.That(s.GetProperty("updated_at").GetDateTimeOffset(), Is.GreaterThanOrEqualTo(s.GetProperty("started_at").GetDateTimeOffset()));
            Assert.That(text, Does.Contain($"pid {migrate.Pid}: vda to {receiver.Address}"));
            Assert.That(text, Does.Contain("phase:    bulk copy"));
        });

        Assert.That(await migrate.WaitForExitAsync(TimeSpan.FromSeconds(90)), Is.Zero, migrate.Stderr);
        Assert.That(Directory.GetFiles(dir["run/migrations"], "*.json"), Is.Empty, "the file is removed at exit");
        var after = await Status(env);
        Assert.That(after.StandardOutput.Trim(), Is.EqualTo("no migration in progress"));
    }

    [Test]
    public async Task Status_removes_the_file_of_a_migration_whose_process_is_gone()
    {
        using var dir = new TempDir("status");
        var env = new Dictionary<string, string> { ["BLOCKMIGRATE_RUN_DIR"] = dir["run"] };
        using var gone = Process.Start("true")!;
        await gone.WaitForExitAsync();
        Directory.CreateDirectory(dir["run/migrations"]);
        var stale = Path.Combine(dir["run/migrations"], $"{gone.Id}.json");
        File.WriteAllText(stale, $$"""{"pid":{{gone.Id}},"phase":"bulkcopy","to":"x:7420","disks":["vda"]}""");

        var r = await Status(env);

        Assert.That(r.ExitCode, Is.Zero, r.StandardError);
        Assert.That(r.StandardOutput.Trim(), Is.EqualTo("no migration in progress"));
        Assert.That(File.Exists(stale), Is.False);
    }

    [Test]
    public async Task Status_removes_the_file_of_a_migration_whose_PID_was_reused()
    {
        using var dir = new TempDir("status");
        var env = new Dictionary<string, string> { ["BLOCKMIGRATE_RUN_DIR"] = dir["run"] };
        Directory.CreateDirectory(dir["images"]);
        // a live blockmigrate process, but not the one that wrote the file (another start time)
        using var other = BackgroundProcess.Cli("receive", "--listen", "127.0.0.1:0", "--image-dir", dir["images"], "--plaintext");
        await other.WaitForLineAsync("^listening on ", TimeSpan.FromSeconds(30));
        Directory.CreateDirectory(dir["run/migrations"]);
        var stale = Path.Combine(dir["run/migrations"], $"{other.Pid}.json");
        File.WriteAllText(stale, $$"""{"pid":{{other.Pid}},"pid_start_ticks":1,"phase":"bulkcopy","to":"x:7420","disks":["vda"]}""");

        var r = await Status(env);

        Assert.That(r.StandardOutput.Trim(), Is.EqualTo("no migration in progress"), r.StandardError);
        Assert.That(File.Exists(stale), Is.False);
        other.Stop();
    }

    [Test]
    public async Task Status_does_not_read_a_directory_others_can_write()
    {
        using var dir = new TempDir("status");
        var env = new Dictionary<string, string> { ["BLOCKMIGRATE_RUN_DIR"] = dir["run"] };
        Directory.CreateDirectory(dir["images"]);
        using var live = BackgroundProcess.Cli("receive", "--listen", "127.0.0.1:0", "--image-dir", dir["images"], "--plaintext");
        await live.WaitForLineAsync("^listening on ", TimeSpan.FromSeconds(30));
        // anybody could have planted this file (as in a /tmp/blockmigrate-UID made first by another user)
        Directory.CreateDirectory(dir["run/migrations"]);
        File.SetUnixFileMode(dir["run/migrations"], (UnixFileMode)Convert.ToInt32("0777", 8));
        var planted = Path.Combine(dir["run/migrations"], $"{live.Pid}.json");
        File.WriteAllText(planted, $$"""{"pid":{{live.Pid}},"phase":"bulkcopy","to":"planted:7420","disks":["vda"]}""");

        var r = await Status(env);

        Assert.That(r.ExitCode, Is.Zero, r.StandardError);
        Assert.That(r.StandardOutput.Trim(), Is.EqualTo("no migration in progress"), "a planted status was shown");
        live.Stop();
    }

    internal static async Task<CliWrap.Buffered.BufferedCommandResult> Status(Dictionary<string, string> env, params string[] args)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        return await CliWrap.Buffered.BufferedCommandExtensions.ExecuteBufferedAsync(
            CliWrap.Cli.Wrap("dotnet").WithArguments(new[] { Repo.CliDll, "status" }.Concat(args))
                .WithEnvironmentVariables(e => e.Set("BLOCKMIGRATE_RUN_DIR", env["BLOCKMIGRATE_RUN_DIR"]).Set("PATH", Tool.Env["PATH"]))
                .WithValidation(CliWrap.CommandResultValidation.None), cts.Token);
    }
}
