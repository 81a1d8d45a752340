using System.Text.Json;
using BlockMigrate.Engine;

namespace BlockMigrate.Cli.Report;

/// <summary>
/// The report's <c>timeline</c> object: the series the SVG draws, so that a picture can be checked
/// against the numbers. Times are seconds since <c>start_unix_ms</c>; the samples are columns (one array
/// per series, index by index), rates in bytes per second; <c>memory_bytes_per_second</c> holds null
/// where the hypervisor reported nothing.
/// </summary>
public static class TimelineJson
{
    public static void Write(Utf8JsonWriter w, Timeline t)
    {
        w.WriteStartObject();
        w.WriteNumber("start_unix_ms", t.Start.ToUnixTimeMilliseconds());
        w.WriteNumber("sample_interval_ms", TimelineSampler.Every.TotalMilliseconds);
        w.WriteNumber("rate_window_ms", TimelineSampler.Window.TotalMilliseconds);
        w.WriteStartArray("marks");
        foreach (var m in t.Marks)
        {
            w.WriteStartObject();
            w.WriteString("name", m.Name);
            w.WriteNumber("t", Math.Round(m.T, 6));
            w.WriteEndObject();
        }
        w.WriteEndArray();
        if (t.Pause is { } p)
        {
            w.WriteStartObject("pause");
            w.WriteNumber("from", Math.Round(p.From, 6));
            w.WriteNumber("to", Math.Round(p.To, 6));
            w.WriteBoolean("guest", p.GuestPause);
            w.WriteEndObject();
        }
        else w.WriteNull("pause");
        w.WriteStartArray("phases");
        foreach (var ph in t.Phases)
        {
            w.WriteStartObject();
            w.WriteString("phase", ph.Phase.ToString());
            w.WriteNumber("t", Math.Round(ph.T, 4));
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteStartArray("rounds");
        foreach (var r in t.Rounds)
        {
            w.WriteStartObject();
            w.WriteNumber("round", r.Round);
            w.WriteNumber("t", Math.Round(r.T, 4));
            w.WriteNumber("dirty_blocks", r.DirtyBlocks);
            w.WriteNumber("dirty_bytes", r.DirtyBytes);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteStartObject("samples");
        Column(w, "t", t.Samples, s => Math.Round(s.T, 4));
        Column(w, "disk_bytes_per_second", t.Samples, s => Math.Round(s.DiskBytesPerSecond));
        w.WriteStartArray("memory_bytes_per_second");
        foreach (var s in t.Samples)
            if (s.MemoryBytesPerSecond is { } m) w.WriteNumberValue(Math.Round(m));
            else w.WriteNullValue();
        w.WriteEndArray();
        Column(w, "throttle_bytes_per_second", t.Samples, s => s.ThrottleBytesPerSecond);
        w.WriteStartArray("phase");
        foreach (var s in t.Samples) w.WriteStringValue(s.Phase.ToString());
        w.WriteEndArray();
        w.WriteEndObject();
        w.WriteEndObject();
    }

    private static void Column(Utf8JsonWriter w, string name, IReadOnlyList<TimelineSample> samples, Func<TimelineSample, double> value)
    {
        w.WriteStartArray(name);
        foreach (var s in samples) w.WriteNumberValue(value(s));
        w.WriteEndArray();
    }
}
