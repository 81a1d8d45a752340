using System.Text.Json;
using BlockMigrate.Cli.Report;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// <c>migrate --timeline</c> without a migration: the sampler's rates from counters fed at known times,
/// and the picture read back (System.Xml.Linq) against the report's numbers (<see cref="TimelinePicture"/>).
/// </summary>
public class TimelineTests
{
    private static TimeSpan S(double seconds) => TimeSpan.FromSeconds(seconds);

    private static TimelineSampler Sampler() => new(() => 0, _ => Task.FromResult<long?>(null), () => 0);

    [Test]
    public void Rates_are_the_counters_change_over_the_window_centred_on_each_sample()
    {
        var s = Sampler();
        // 10 MB/s of disk throughout; memory not started for the first second, then 20 MB/s
        for (var i = 0; i <= 30; i++)
        {
            var t = i / 10.0;
            long? memory = t < 1 ? null : (long)((t - 1) * 20e6);
            s.Sample(S(t), (long)(t * 10e6), memory, i >= 20 ? 5_000_000UL : 0);
        }
        var samples = s.Build().Samples;
        Assert.That(samples, Has.Count.EqualTo(31));
        Assert.That(samples[15].DiskBytesPerSecond, Is.EqualTo(10e6).Within(100));
        Assert.That(samples[0].DiskBytesPerSecond, Is.EqualTo(10e6).Within(100), "at the edge, over the half window there is");
        Assert.That(samples[5].MemoryBytesPerSecond, Is.Null, "before the hypervisor reported any memory");
        Assert.That(samples[20].MemoryBytesPerSecond, Is.EqualTo(20e6).Within(100));
        Assert.That(samples[10].MemoryBytesPerSecond, Is.EqualTo(5e6 / 0.35).Within(100), "the counter was 0 at the sample before its first reading (0.9 s): 5 MB from 0.9 to 1.25 s");
        Assert.That(samples[19].ThrottleBytesPerSecond, Is.Zero);
        Assert.That(samples[20].ThrottleBytesPerSecond, Is.EqualTo(5_000_000UL));
    }

    [Test]
    public void A_memory_reading_missed_gets_the_average_rate_across_it_not_zero_nor_a_reset()
    {
        var s = Sampler();
        // 10 MB/s throughout; QEMU's monitor does not answer from 1.0 to 2.0 s (as while it sends the last memory with the VM stopped)
        for (var i = 0; i <= 30; i++)
            s.Sample(S(i / 10.0), 0, i is >= 10 and < 20 ? null : i * 1_000_000L, 0);
        var samples = s.Build().Samples;
        foreach (var i in new[] { 8, 10, 15, 19, 22 })
            Assert.That(samples[i].MemoryBytesPerSecond, Is.EqualTo(10e6).Within(100), $"sample {i}");
        s.Sample(S(3.1), 0, null, 0);
        Assert.That(s.Build().Samples[^1].MemoryBytesPerSecond, Is.Null, "after the last reading the counter is unknown");
    }

    [Test]
    public void Stop_is_the_hypervisors_event_time_where_it_reports_one_else_the_switchovers_start()
    {
        var without = Sampler();
        without.Phase(MigrationPhase.BulkCopy, S(0.1));
        without.Phase(MigrationPhase.Switchover, S(4.2));
        without.Mark(TimelineMarks.HandOver, S(4.3));
        Assert.That(without.Build().At(TimelineMarks.Stop), Is.EqualTo(4.2).Within(1e-9));
        Assert.That(without.Build().Pause, Is.EqualTo((4.2, 4.3, false)), "no RESUME: shaded to the hand-over, and not called the guest's pause");

        var with = Sampler();
        with.Phase(MigrationPhase.Switchover, S(4.2));
        var start = with.Build().Start;
        with.Mark(TimelineMarks.Stop, start + S(4.15));
        with.Mark(TimelineMarks.Resume, start + S(4.5));
        var t = with.Build();
        Assert.That(t.At(TimelineMarks.Stop), Is.EqualTo(4.15).Within(1e-6), "the event's wall-clock time, on the timeline's axis");
        Assert.That(t.Marks.Count(m => m.Name == TimelineMarks.Stop), Is.EqualTo(1));
        Assert.That(t.Pause, Is.EqualTo((4.15, 4.5, true)));
    }

    /// <summary>A migration of 12 s: bulk copy, dirty rounds with a throttle, memory, a switchover of 200 ms.</summary>
    private static Timeline Example(bool memory = true)
    {
        var s = Sampler();
        s.Phase(MigrationPhase.Connecting, S(0));
        s.Phase(MigrationPhase.BulkCopy, S(0.4));
        s.Round(0, 65536, 256L << 20, S(0.4));
        s.Phase(MigrationPhase.DirtyRounds, S(6));
        s.Round(1, 900, 900 * 4096, S(6));
        s.Round(2, 120, 120 * 4096, S(7.1));
        s.Phase(MigrationPhase.Memory, S(7.5));
        s.Phase(MigrationPhase.Switchover, S(10.01));
        s.Phase(MigrationPhase.FinalBlocks, S(10.06));
        s.Phase(MigrationPhase.Done, S(10.4));
        s.Mark(TimelineMarks.HandOver, S(10.06));
        s.Mark(TimelineMarks.Commit, S(10.31));
        var start = s.Build().Start;
        s.Mark(TimelineMarks.Stop, start + S(10.0));
        s.Mark(TimelineMarks.Resume, start + S(10.21));
        long wire = 0, mem = 0;
        for (var i = 0; i <= 120; i++)
        {
            var t = i / 10.0;
            wire += t < 7.5 ? 2_000_000 : 100_000;
            if (t >= 7.5 && t < 10.2) mem += 1_500_000;
            s.Sample(S(t), wire, memory && t >= 7.5 ? mem : null, t is >= 6.5 and < 10.06 ? 3_000_000UL : 0);
        }
        return s.Build();
    }

    private static JsonElement ReportOf(Timeline t)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer)) TimelineJson.Write(w, t);
        return JsonDocument.Parse(buffer.ToArray()).RootElement;
    }

    [Test]
    public void The_picture_has_the_reports_marks_pause_series_and_rounds()
    {
        var t = Example();
        var report = ReportOf(t);
        var picture = new TimelinePicture(TimelineSvg.Render(t, "vda to dst: qemu"));
        picture.AssertMatchesReport(report);
        var series = picture.Series("rates");
        Assert.That(series.Keys, Is.EquivalentTo(new[] { "disk", "memory", "throttle" }));
        Assert.That(series["memory"], Is.EqualTo(2 * t.Samples.Count));
        Assert.That(picture.Rounds(), Is.EqualTo(new[] { (0, 65536UL), (1, 900UL), (2, 120UL) }));
        Assert.That(picture.Series("switchover"), Does.ContainKey("disk").And.ContainKey("memory"), "the close-up draws the rates too");
        var phases = picture.Group("phases").Descendants().Where(e => (string?)e.Attribute("class") == "phase").Select(e => (string)e.Attribute("data-phase")!);
        Assert.That(phases, Is.EqualTo(t.Phases.Select(p => p.Phase.ToString())));
    }

    [Test]
    public void Each_mark_is_drawn_where_the_report_says_not_merely_present()
    {
        // the check itself must fail on a picture whose mark is off by a few pixels
        var t = Example();
        var report = ReportOf(t);
        var moved = t with { Marks = [.. t.Marks.Select(m => m.Name == TimelineMarks.Resume ? m with { T = m.T + 0.01 } : m)] };
        var picture = new TimelinePicture(TimelineSvg.Render(moved, "moved"));
        using (new NUnit.Framework.Internal.TestExecutionContext.IsolatedContext())
            Assert.Throws<AssertionException>(() => picture.AssertMatchesReport(report));
        new TimelinePicture(TimelineSvg.Render(t, "as reported")).AssertMatchesReport(report);
    }

    [Test]
    public void The_area_heights_are_the_reported_rates_on_the_link_axis()
    {
        var t = Example();
        var picture = new TimelinePicture(TimelineSvg.Render(t, "rates"));
        var top = picture.Top("rates", "disk");
        var labels = picture.Group("rates").Descendants().Where(e => (string?)e.Attribute("class") == "y-tick")
            .Select(e => (V: double.Parse(e.Value, System.Globalization.CultureInfo.InvariantCulture), Y: double.Parse((string)e.Attribute("y")!, System.Globalization.CultureInfo.InvariantCulture) - 4)).ToList();
        var (v0, y0) = labels.First();
        var (v1, y1) = labels.Last();
        double Mb(double y) => v0 + (y - y0) / (y1 - y0) * (v1 - v0);
        Assert.That(Mb(top[30].Y), Is.EqualTo(t.Samples[30].DiskBytesPerSecond / 1e6).Within(0.1), "MB/s at 3 s");
        Assert.That(Mb(top[100].Y), Is.EqualTo(t.Samples[100].DiskBytesPerSecond / 1e6).Within(0.1), "MB/s at 10 s");
    }

    [Test]
    public void Without_memory_figures_there_is_no_memory_series_and_the_legend_says_so()
    {
        var t = Example(memory: false);
        var picture = new TimelinePicture(TimelineSvg.Render(t, "xen"));
        Assert.That(picture.Series("rates").Keys, Does.Not.Contain("memory"));
        Assert.That(picture.Group("legend").Value, Does.Contain("memory: not reported"));
        picture.AssertMatchesReport(ReportOf(t));
    }

    [Test]
    public void A_title_with_markup_stays_text()
    {
        var svg = TimelineSvg.Render(Example(), "vda to <b>&\"host\"");
        var picture = new TimelinePicture(svg);
        Assert.That(picture.Document.Root!.Elements().Any(e => e.Value == "vda to <b>&\"host\""), Is.True);
    }

    [Test]
    public void The_report_has_the_series_column_by_column()
    {
        var t = Example();
        var r = ReportOf(t);
        var samples = r.GetProperty("samples");
        foreach (var column in new[] { "t", "disk_bytes_per_second", "memory_bytes_per_second", "throttle_bytes_per_second", "phase" })
            Assert.That(samples.GetProperty(column).GetArrayLength(), Is.EqualTo(t.Samples.Count), column);
        Assert.That(samples.GetProperty("disk_bytes_per_second")[30].GetDouble(), Is.EqualTo(Math.Round(t.Samples[30].DiskBytesPerSecond)));
        Assert.That(samples.GetProperty("memory_bytes_per_second")[10].ValueKind, Is.EqualTo(JsonValueKind.Null));
        Assert.That(r.GetProperty("rounds")[1].GetProperty("dirty_blocks").GetUInt64(), Is.EqualTo(900UL));
        Assert.That(TimelinePicture.ReportMarks(r)["RESUME"], Is.EqualTo(10.21).Within(1e-3));
    }

    [Test]
    public void A_timeline_file_in_a_missing_directory_is_refused_before_anything_starts()
    {
        Assert.That(() => TimelineFile.Parse("/nonexistent-dir/x.svg"), Throws.TypeOf<FormatException>().With.Message.Contains("no directory"));
        Assert.That(() => TimelineFile.Parse("/tmp"), Throws.TypeOf<FormatException>().With.Message.Contains("directory"));
        Assert.That(TimelineFile.Parse("/tmp/x.svg"), Is.EqualTo("/tmp/x.svg"));
    }
}
