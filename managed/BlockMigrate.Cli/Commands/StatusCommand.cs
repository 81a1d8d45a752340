using System.CommandLine;
using System.Text.Json;
using BlockMigrate.Cli.Status;

namespace BlockMigrate.Cli.Commands;

/// <summary>
/// <c>blockmigrate status</c>: the migrations running on this host (from any shell), read from the status
/// files they publish; files left by processes that are gone are removed. Exit 0, also when there is none.
/// </summary>
public static class StatusCommand
{
    public static Command Create()
    {
        var json = new Option<bool>("--json") { Description = "print {\"migrations\": [...]} as one JSON object" };
        var command = new Command("status", "Show the migrations in progress on this host") { json };
        command.SetAction(r =>
        {
            var live = StatusDirectory.ReadLive();
            if (r.GetValue(json))
            {
                Console.Out.WriteLine(JsonSerializer.Serialize(new StatusListing(live), StatusJsonContext.Default.StatusListing));
                return CommandRunner.Ok;
            }
            if (live.Count == 0)
            {
                Console.Out.WriteLine("no migration in progress");
                return CommandRunner.Ok;
            }
            var now = DateTimeOffset.UtcNow;
            foreach (var s in live)
            {
                Console.Out.WriteLine($"pid {s.Pid}: {string.Join(", ", s.Disks)} to {s.To} ({s.Hypervisor}), started {s.StartedAt.ToLocalTime():yyyy-MM-dd HH:mm:ss} ({Ago(now - s.StartedAt)} ago)");
                var phase = s.Phase switch
                {
                    "bulkcopy" => "bulk copy",
                    "dirtyrounds" => $"dirty round {s.Round}",
                    "finalblocks" => "final blocks (handed over; the VM runs at the destination)",
                    _ => s.Phase,
                };
                Console.Out.WriteLine($"  phase:    {phase}{(s.Percent is { } p ? $", {p:0.0}% ({Units.Bytes(s.RoundBytesDone)} of {Units.Bytes(s.RoundBytesTotal)})" : "")}" +
                                      $"{(s.EtaSeconds is { } eta ? $", ETA {eta:0} s" : "")}");
                Console.Out.WriteLine($"  rate:     {Units.Bytes(s.WireBytesPerSecond)}/s on the wire; dirty {s.DirtyBlocks} blocks ({Units.Bytes(s.DirtyBytes)})");
                Console.Out.WriteLine($"  throttle: {(s.ThrottleBytesPerSecond == 0 ? "off" : Units.Bytes(s.ThrottleBytesPerSecond) + "/s")}");
                Console.Out.WriteLine(s.ReturnBaseBlocks > 0
                    ? $"  blocks:   {s.BlocksSent} sent, {s.ReturnBaseBlocks} taken from the return base"
                    : $"  blocks:   {s.BlocksSent} sent as data{(s.BlocksFromSeeds > 0 ? $", {s.BlocksFromSeeds} written at the destination from its seeds" : "")}");
                if (s.Network is { } n) Console.Out.WriteLine($"  network:  {n}");
                Console.Out.WriteLine($"  updated:  {Ago(now - s.UpdatedAt)} ago");
            }
            return CommandRunner.Ok;
        });
        return command;
    }

    private static string Ago(TimeSpan t) =>
        t < TimeSpan.Zero ? "0 s" : t.TotalSeconds < 120 ? $"{t.TotalSeconds:0} s" : t.TotalMinutes < 120 ? $"{t.TotalMinutes:0} min" : $"{t.TotalHours:0.0} h";
}
