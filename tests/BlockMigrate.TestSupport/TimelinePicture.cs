using System.Globalization;
using System.Text.Json;
using System.Xml.Linq;
using NUnit.Framework;

namespace BlockMigrate.TestSupport;

/// <summary>
/// A timeline SVG (<c>migrate --timeline</c>) read back as a reader of the picture would: in each panel
/// group, the time axis from its tick labels (a label's text is its value, its x where that value is),
/// and where each mark's line, the pause's shading and each series are. Used to check a picture
/// against the JSON report's <c>timeline</c> numbers.
/// </summary>
public sealed class TimelinePicture
{
    private static readonly XNamespace Svg = "http://www.w3.org/2000/svg";
    public XDocument Document { get; }

    public TimelinePicture(string svg) => Document = XDocument.Parse(svg);

    public static TimelinePicture Load(string path) => new(File.ReadAllText(path));

    public XElement Group(string id) =>
        Document.Descendants(Svg + "g").SingleOrDefault(g => (string?)g.Attribute("id") == id)
        ?? throw new AssertionException($"the picture has no group '{id}'");

    /// <summary>Pixels per unit and the pixel of 0, fitted to every tick label of <paramref name="group"/> (least squares).</summary>
    public (double PixelsPerUnit, double Zero) Axis(string group)
    {
        var ticks = Group(group).Descendants(Svg + "text").Where(t => (string?)t.Attribute("class") == "x-tick")
            .Select(t => (Value: double.Parse(t.Value, CultureInfo.InvariantCulture), X: X(t, "x"))).ToList();
        if (ticks.Count < 2) throw new AssertionException($"group '{group}' has {ticks.Count} x-axis tick labels");
        var mv = ticks.Average(t => t.Value);
        var mx = ticks.Average(t => t.X);
        var slope = ticks.Sum(t => (t.Value - mv) * (t.X - mx)) / ticks.Sum(t => (t.Value - mv) * (t.Value - mv));
        return (slope, mx - slope * mv);
    }

    /// <summary>The x of each line of each mark in <paramref name="group"/> (one per panel), by mark name.</summary>
    public Dictionary<string, List<double>> Marks(string group) =>
        Group(group).Descendants(Svg + "line").Where(l => (string?)l.Attribute("class") == "mark")
            .GroupBy(l => (string)l.Attribute("data-mark")!).ToDictionary(g => g.Key, g => g.Select(l => X(l, "x1")).ToList());

    /// <summary>The pause's shading in <paramref name="group"/> (one per panel): left and right edge.</summary>
    public List<(double Left, double Right)> Pause(string group) =>
        Group(group).Descendants(Svg + "rect").Where(r => (string?)r.Attribute("class") == "pause")
            .Select(r => (X(r, "x"), X(r, "x") + X(r, "width"))).ToList();

    /// <summary>The points of each series' path in <paramref name="group"/> (an area has each point twice: top and bottom).</summary>
    public Dictionary<string, int> Series(string group) =>
        Group(group).Descendants(Svg + "path").Where(p => (string?)p.Attribute("class") == "series")
            .ToDictionary(p => (string)p.Attribute("data-series")!, p => ((string)p.Attribute("d")!).Count(c => c is 'M' or 'L' or 'H'));

    /// <summary>The tops of the area <paramref name="series"/> in <paramref name="group"/>: (x, y) of its upper edge, left to right.</summary>
    public List<(double X, double Y)> Top(string group, string series)
    {
        var d = (string)Group(group).Descendants(Svg + "path").Single(p => (string?)p.Attribute("data-series") == series).Attribute("d")!;
        var points = d.Split(' ', StringSplitOptions.RemoveEmptyEntries).Where(p => p[0] is 'M' or 'L')
            .Select(p => p[1..].Split(',')).Select(p => (double.Parse(p[0], CultureInfo.InvariantCulture), double.Parse(p[1], CultureInfo.InvariantCulture))).ToList();
        return points.Take(points.Count / 2).ToList();
    }

    /// <summary>The rounds drawn: (round, blocks) from each dot.</summary>
    public List<(int Round, ulong Blocks)> Rounds() =>
        Group("rounds").Descendants(Svg + "circle").Where(c => (string?)c.Attribute("class") == "round")
            .Select(c => ((int)c.Attribute("data-round")!, (ulong)c.Attribute("data-blocks")!)).ToList();

    private static double X(XElement e, string attribute) => double.Parse((string)e.Attribute(attribute)!, CultureInfo.InvariantCulture);

    /// <summary>
    /// The picture against the report's <c>timeline</c>: in the overview and in the switchover's close-up
    /// (ticks in ms from STOP), every mark of the report is drawn, and at the x its time gives on the axis
    /// read from the tick labels (within <paramref name="pixels"/>); the shading spans the report's pause
    /// (STOP to RESUME); the disk series and the rounds are drawn, as many as the report has.
    /// </summary>
    public void AssertMatchesReport(JsonElement timeline, double pixels = 0.5)
    {
        var marks = ReportMarks(timeline);
        Assert.That(marks, Does.ContainKey("STOP").And.ContainKey("hand-over").And.ContainKey("commit"), timeline.ToString());
        var pause = timeline.GetProperty("pause");
        var (from, to) = (pause.GetProperty("from").GetDouble(), pause.GetProperty("to").GetDouble());
        Assert.That(from, Is.EqualTo(marks["STOP"]), "the pause begins at STOP");
        Assert.That(to, Is.EqualTo(marks.GetValueOrDefault("RESUME", marks["hand-over"])), "the pause ends at RESUME (at the hand-over where there is no RESUME)");
        foreach (var (group, scale, origin) in new[] { ("overview", 1.0, 0.0), ("switchover", 1000.0, marks["STOP"]) })
        {
            var (ppu, zero) = Axis(group);
            double At(double t) => zero + ppu * (t - origin) * scale;
            var drawn = Marks(group);
            Assert.That(drawn.Keys, Is.EquivalentTo(marks.Keys), $"{group}: the marks drawn");
            foreach (var (name, t) in marks)
                foreach (var x in drawn[name])
                    Assert.That(x, Is.EqualTo(At(t)).Within(pixels), $"{group}: {name} at {t} s");
            Assert.That(Pause(group), Is.Not.Empty, $"{group}: the pause is shaded");
            foreach (var (left, right) in Pause(group))
            {
                Assert.That(left, Is.EqualTo(At(from)).Within(pixels), $"{group}: the shading begins at STOP");
                Assert.That(right, Is.EqualTo(At(to)).Within(pixels), $"{group}: the shading ends at {(marks.ContainsKey("RESUME") ? "RESUME" : "the hand-over")}");
            }
        }
        var samples = timeline.GetProperty("samples").GetProperty("t").GetArrayLength();
        Assert.That(samples, Is.GreaterThan(0), "the report has samples");
        Assert.That(Series("rates")["disk"], Is.EqualTo(2 * samples), "the disk series has a point per sample (top and bottom)");
        Assert.That(Rounds().Select(r => r.Round), Is.EqualTo(timeline.GetProperty("rounds").EnumerateArray().Select(r => r.GetProperty("round").GetInt32())),
            "a dot per round of the report");
    }

    /// <summary>The times of the report's <c>timeline.marks</c>, by name.</summary>
    public static Dictionary<string, double> ReportMarks(JsonElement timeline) =>
        timeline.GetProperty("marks").EnumerateArray().ToDictionary(m => m.GetProperty("name").GetString()!, m => m.GetProperty("t").GetDouble());
}
