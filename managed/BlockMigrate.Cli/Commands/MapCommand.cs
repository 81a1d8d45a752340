using System.CommandLine;
using System.Text.Json;
using BlockMigrate.Maps;

namespace BlockMigrate.Cli.Commands;

/// <summary><c>blockmigrate map PATH [--json]</c>: a map's geometry, state, counters and dirty extents.</summary>
public static class MapCommand
{
    public static Command Create()
    {
        var path = new Argument<string>("path") { Description = "the dirty map file (e.g. /dev/shm/blockmigrate/vm0.map)" };
        var json = new Option<bool>("--json") { Description = "print one JSON object" };
        var command = new Command("map", "Show a dirty map: geometry, state, counters and dirty extents") { path, json };
        command.SetAction(r => Run(r.GetValue(path)!, r.GetValue(json)));
        return command;
    }

    private static int Run(string path, bool json)
    {
        if (!File.Exists(path))
            return CommandRunner.Fail($"dirty map {path}: no such file");
        using var map = DirtyMap.Open(path);
        var info = map.Info();
        var ranges = map.DirtyRanges();
        if (json) WriteJson(path, info, ranges);
        else WriteText(path, info, ranges);
        return CommandRunner.Ok;
    }

    private static void WriteText(string path, DirtyMapInfo i, List<BlockRange> ranges)
    {
        var o = Console.Out;
        o.WriteLine($"map:           {path}");
        o.WriteLine($"geometry:      {i.Blocks} blocks of {Units.Bytes(i.BlockSize)}, image {Units.Bytes(i.ImageSize)} ({i.ImageSize} bytes)");
        o.WriteLine($"state:         {StateText(i.State)}");
        o.WriteLine($"throttle:      {(i.ThrottleBytesPerSecond == 0 ? "off" : Units.Bytes(i.ThrottleBytesPerSecond) + "/s")}");
        o.WriteLine($"owner pid:     {(i.OwnerPid == 0 ? "none" : i.OwnerPid.ToString())}");
        o.WriteLine($"writes:        {i.Writes} ({Units.Bytes(i.BytesWritten)}), {i.WritesInFlight} in flight");
        o.WriteLine($"waited:        throttled {i.Throttled.TotalSeconds:0.###} s, frozen {i.Frozen.TotalSeconds:0.###} s, gated {i.Gated.TotalSeconds:0.###} s");
        o.WriteLine($"dirty blocks:  {i.DirtyBlocks} ({Units.Bytes(i.DirtyBlocks * i.BlockSize)}) in {ranges.Count} ranges");
        if (i.GatedBlocks > 0) o.WriteLine($"gated blocks:  {i.GatedBlocks}");
        const int shown = 20;
        foreach (var r in ranges.Take(shown))
            o.WriteLine(r.First == r.Last ? $"  {r.First}" : $"  {r.First}-{r.Last}");
        if (ranges.Count > shown) o.WriteLine($"  ... {ranges.Count - shown} more ranges (use --json)");
    }

    private static void WriteJson(string path, DirtyMapInfo i, List<BlockRange> ranges)
    {
        using var stdout = Console.OpenStandardOutput();
        using (var w = new Utf8JsonWriter(stdout))
        {
            w.WriteStartObject();
            w.WriteString("path", path);
            w.WriteNumber("version", i.Version);
            w.WriteNumber("block_size", i.BlockSize);
            w.WriteNumber("blocks", i.Blocks);
            w.WriteNumber("image_size", i.ImageSize);
            w.WriteStartArray("state");
            foreach (var flag in Enum.GetValues<MapState>())
                if (flag != MapState.None && i.State.HasFlag(flag)) w.WriteStringValue(JsonNamingPolicy.SnakeCaseLower.ConvertName(flag.ToString()));
            w.WriteEndArray();
            w.WriteNumber("throttle_bytes_per_second", i.ThrottleBytesPerSecond);
            w.WriteNumber("owner_pid", i.OwnerPid);
            w.WriteNumber("writes", i.Writes);
            w.WriteNumber("bytes_written", i.BytesWritten);
            w.WriteNumber("writes_in_flight", i.WritesInFlight);
            w.WriteNumber("throttled_seconds", i.Throttled.TotalSeconds);
            w.WriteNumber("frozen_seconds", i.Frozen.TotalSeconds);
            w.WriteNumber("gated_seconds", i.Gated.TotalSeconds);
            w.WriteNumber("dirty_blocks", i.DirtyBlocks);
            w.WriteNumber("gated_blocks", i.GatedBlocks);
            w.WriteStartArray("dirty_ranges");
            foreach (var r in ranges)
            {
                w.WriteStartArray();
                w.WriteNumberValue(r.First);
                w.WriteNumberValue(r.Last);
                w.WriteEndArray();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        stdout.WriteByte((byte)'\n');
    }

    private static string StateText(MapState s) => s == MapState.None ? "idle" : s.ToString().ToLowerInvariant();
}
