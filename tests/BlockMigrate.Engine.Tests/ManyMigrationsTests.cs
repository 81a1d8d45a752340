using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// Several migrations at once into one receiver service (issue 11, item 4): each under its own writer, each
/// verified, none holding up another. Throughput and fairness are benchmark figures (tools/bench-many.sh), not
/// asserted here.
/// </summary>
[CancelAfter(240_000)]
public class ManyMigrationsTests
{
    private const int SeqBlocks = 1024; // 4 MiB of sequence-numbered 4 KiB blocks at the start of each disk

    [Test]
    public async Task Four_concurrent_migrations_into_one_receiver_each_arrive_whole()
    {
        using var dir = new TempDir("engine");
        var keys = new KeyPair(dir.Path);
        string[] names = ["vda", "vdb", "vdc", "vdd"];
        var sources = names.Select(n => SourceShim.Start(Directory.CreateDirectory(dir[n]).FullName, 24L << 20, randomBytes: 12 << 20)).ToArray();
        var writers = new List<BackgroundProcess>();
        try
        {
            using var receiver = await ReceiverProcess.StartServiceAsync(dir["dst"], keys);
            var logs = names.Select(n => dir[n + ".writer.log"]).ToArray();
            for (var i = 0; i < names.Length; i++)
                writers.Add(BackgroundProcess.Python("seqwriter.py", "write", sources[i].Uri, "--blocks", SeqBlocks.ToString(), "--log", logs[i], "--rate", "500"));
            await Task.Delay(700);

            var runs = await Task.WhenAll(names.Select((n, i) => MigrateRun.RunArgsAsync(
                "--disk", sources[i].DiskArg(n), "--to", receiver.Address, "--json", "--timeout", "180",
                "--key", keys.SourceKey, "--peer-fingerprint", keys.ReceiverFingerprint, "--verify", "--keep-source-frozen")));
            foreach (var w in writers) w.Kill();

            for (var i = 0; i < names.Length; i++)
            {
                var run = runs[i];
                Assert.That(run.ExitCode, Is.Zero, names[i] + ": " + run);
                var report = run.Report;
                Assert.That(report.GetProperty("verified").GetBoolean(), Is.True, names[i] + " verified");
                var frozenAt = report.GetProperty("frozen_at_unix_ms").GetInt64();
                var acked = File.ReadAllLines(logs[i]).Select(l => l.Split(' ')).Where(p => p.Length == 2 && long.Parse(p[1]) < frozenAt)
                    .Select(p => long.Parse(p[0])).DefaultIfEmpty(-1).Max();
                Assert.That(acked, Is.GreaterThan(50), names[i] + ": the writer was writing during the migration");
                var check = await Tool.RunAsync("/usr/bin/python3", [Path.Combine(Repo.Root, "tools", "seqwriter.py"), "check", receiver.Image(names[i]),
                    "--blocks", SeqBlocks.ToString(), "--at-least", acked.ToString()]);
                Assert.That(check.ExitCode, Is.Zero, names[i] + ": " + check.StandardOutput);
                var same = await Tool.BlockMigrateAsync("verify", sources[i].Image, receiver.Image(names[i]));
                Assert.That(same.ExitCode, Is.Zero, names[i] + ": " + same.StandardOutput + same.StandardError);
            }
            Assert.That(receiver.Process.HasExited, Is.False, "the service receiver keeps serving after four sessions");
        }
        finally
        {
            foreach (var w in writers) w.Dispose();
            foreach (var s in sources)
            {
                if (s.Map.Info().State.HasFlag(MapState.Frozen)) s.Map.Thaw();
                s.Dispose();
            }
        }
    }
}
