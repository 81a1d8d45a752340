using System.Globalization;
using System.Xml.Linq;
using BlockMigrate.Engine;

namespace BlockMigrate.Cli.Report;

/// <summary>
/// Draws a <see cref="Timeline"/> as a self-contained SVG, 880 × 600 px (readable at README width):
/// <list type="bullet">
/// <item>a strip of the phases, colour by phase;</item>
/// <item>the link (MB/s, 10⁶ bytes): disk bytes per second as the engine wrote them to its socket, memory as the hypervisor counts
/// what it sent, stacked on it, the throttle on the guest's writes;</item>
/// <item>the blocks each round of the disk copy took (log scale; round 0 is the bulk copy);</item>
/// <item>a close-up of the switchover (ms from STOP), where the guest's pause is a few pixels of the whole;</item>
/// <item>STOP, hand-over, RESUME and commit as vertical lines through every panel; the pause (STOP to
/// RESUME) shaded; a legend.</item>
/// </list>
/// Plain SVG written here, not a plotting library: see docs/DESIGN.md ("The timeline picture") for why.
/// Every element a test looks for has a class: <c>x-tick</c> (a tick's label, its value as text),
/// <c>mark</c> (with <c>data-mark</c>), <c>pause</c>, <c>series</c> (with <c>data-series</c>), <c>round</c>;
/// the panels are groups with ids <c>phases</c>, <c>rates</c>, <c>rounds</c>, <c>switchover</c>.
/// </summary>
public static class TimelineSvg
{
    public const int Width = 880, Height = 600;
    private const double Left = 70, Right = Width - 24;
    private static readonly XNamespace Svg = "http://www.w3.org/2000/svg";
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    private static readonly (string Name, string Colour, string Label)[] MarkStyles =
    [
        (TimelineMarks.Stop, "#d62728", "STOP"),
        (TimelineMarks.HandOver, "#2ca02c", "hand-over"),
        (TimelineMarks.Resume, "#9467bd", "RESUME"),
        (TimelineMarks.Commit, "#111111", "commit"),
    ];

    private const string DiskColour = "#1f77b4", MemoryColour = "#ff7f0e", ThrottleColour = "#d62728", RoundColour = "#555555";

    private static readonly Dictionary<MigrationPhase, string> PhaseColours = new()
    {
        [MigrationPhase.Connecting] = "#dddddd",
        [MigrationPhase.BulkCopy] = "#aec7e8",
        [MigrationPhase.DirtyRounds] = "#c5b0d5",
        [MigrationPhase.Memory] = "#ffbb78",
        [MigrationPhase.Switchover] = "#ff9896",
        [MigrationPhase.FinalBlocks] = "#98df8a",
        [MigrationPhase.Verifying] = "#dbdb8d",
        [MigrationPhase.Done] = "#f7f7f7",
        [MigrationPhase.Aborting] = "#7f7f7f",
    };

    /// <summary>The SVG document of <paramref name="t"/>, titled <paramref name="title"/>.</summary>
    public static string Render(Timeline t, string title)
    {
        var root = new XElement(Svg + "svg",
            new XAttribute("width", Width), new XAttribute("height", Height),
            new XAttribute("viewBox", $"0 0 {Width} {Height}"),
            new XAttribute("font-family", "DejaVu Sans, Verdana, sans-serif"), new XAttribute("font-size", 11));
        root.Add(E("rect", ("x", 0), ("y", 0), ("width", Width), ("height", Height), ("fill", "white")));
        root.Add(Text(Left, 18, title, ("font-size", 14), ("font-weight", "bold")));

        var end = Math.Max(t.End, 0.001);
        var overview = new Scale(0, NiceCeiling(end), Left, Right);
        var whole = G("overview");
        var phases = G("phases");
        DrawPhases(phases, t, overview, 30, 16);
        whole.Add(phases);
        var rates = G("rates");
        DrawRates(rates, t, overview, 56, 200, ticks: false, 1, "");
        whole.Add(rates);
        var rounds = G("rounds");
        DrawRounds(rounds, t, overview, 266, 90);
        whole.Add(rounds);
        root.Add(whole);

        if (t.Pause is { } pause)
        {
            // the close-up: from a little before STOP to a little after the last mark, in ms from STOP
            var last = Math.Max(pause.To, t.Marks.Max(m => m.T));
            var span = Math.Max(last - pause.From, 0.02);
            var from = pause.From - span * 0.25;
            var to = last + span * 0.25;
            var close = G("switchover");
            close.Add(Text(Left, 424, "the switchover, close up", ("font-weight", "bold")));
            DrawRates(close, t, new Scale(from, to, Left, Right), 432, 96, ticks: true, tickScale: 1000, tickUnit: "ms from STOP", tickOrigin: pause.From);
            root.Add(close);
        }
        DrawLegend(root, t, 578);
        return new XDocument(new XDeclaration("1.0", "utf-8", null), root).ToString();
    }

    private static void DrawPhases(XElement g, Timeline t, Scale x, double y, double h)
    {
        g.Add(Text(8, y + h - 4, "phase"));
        for (var i = 0; i < t.Phases.Count; i++)
        {
            var p = t.Phases[i];
            var next = i + 1 < t.Phases.Count ? t.Phases[i + 1].T : t.End;
            var x0 = x.Of(p.T);
            var w = Math.Max(0, x.Of(next) - x0);
            g.Add(E("rect", ("class", "phase"), ("data-phase", p.Phase.ToString()), ("x", F(x0)), ("y", F(y)), ("width", F(w)), ("height", F(h)),
                ("fill", PhaseColours.GetValueOrDefault(p.Phase, "#cccccc")), ("stroke", "white"), ("stroke-width", 0.5)));
            var label = PhaseName(p.Phase);
            if (w > label.Length * 6.2 + 4) g.Add(Text(x0 + 3, y + h - 4, label, ("font-size", 10)));
        }
    }

    /// <summary>Link panel: disk area, memory stacked on it, throttle line, pause, marks, axes.</summary>
    private static void DrawRates(XElement g, Timeline t, Scale x, double top, double height, bool ticks, double tickScale, string tickUnit, double tickOrigin = 0)
    {
        var bottom = top + height;
        var inside = t.Samples.Where(s => s.T >= x.From - 1 && s.T <= x.To + 1).ToList();
        var max = inside.Select(s => Math.Max(s.DiskBytesPerSecond + (s.MemoryBytesPerSecond ?? 0), s.ThrottleBytesPerSecond)).DefaultIfEmpty(0).Max() / 1e6;
        var y = new Scale(0, NiceCeiling(Math.Max(max, 0.1)), bottom, top);
        g.Add(E("clipPath", ("id", $"clip-{g.Attribute("id")!.Value}")).With(E("rect", ("x", F(x.Lo)), ("y", F(top)), ("width", F(x.Hi - x.Lo)), ("height", F(height)))));
        var clip = $"url(#clip-{g.Attribute("id")!.Value})";
        DrawPause(g, t, x, top, height);
        YAxis(g, y, x, "sent, MB/s");
        if (inside.Count > 0)
        {
            var disk = inside.Select(s => (s.T, Lo: 0.0, Hi: s.DiskBytesPerSecond / 1e6)).ToList();
            g.Add(Area(disk, x, y, DiskColour, "disk", clip));
            if (t.HasMemory)
            {
                var memory = inside.Select(s => (s.T, Lo: s.DiskBytesPerSecond / 1e6, Hi: (s.DiskBytesPerSecond + (s.MemoryBytesPerSecond ?? 0)) / 1e6)).ToList();
                g.Add(Area(memory, x, y, MemoryColour, "memory", clip));
            }
            if (inside.Any(s => s.ThrottleBytesPerSecond > 0))
            {
                var d = new System.Text.StringBuilder();
                for (var i = 0; i < inside.Count; i++)
                {
                    var v = y.Of(inside[i].ThrottleBytesPerSecond / 1e6);
                    d.Append(i == 0 ? $"M{F(x.Of(inside[i].T))},{F(v)}" : $" H{F(x.Of(inside[i].T))} V{F(v)}");
                }
                g.Add(E("path", ("class", "series"), ("data-series", "throttle"), ("d", d.ToString()), ("fill", "none"), ("stroke", ThrottleColour),
                    ("stroke-width", 1.5), ("stroke-dasharray", "5,3"), ("clip-path", clip)));
            }
        }
        DrawMarks(g, t, x, top, height, labels: true);
        XAxis(g, x, bottom, ticks, tickScale, tickUnit, tickOrigin);
        g.Add(E("rect", ("x", F(x.Lo)), ("y", F(top)), ("width", F(x.Hi - x.Lo)), ("height", F(height)), ("fill", "none"), ("stroke", "#999")));
    }

    /// <summary>The blocks each round took, as stems on a log scale.</summary>
    private static void DrawRounds(XElement g, Timeline t, Scale x, double top, double height)
    {
        var bottom = top + height;
        var max = t.Rounds.Select(r => (double)r.DirtyBlocks).DefaultIfEmpty(1).Max();
        var decades = Math.Max(1, (int)Math.Ceiling(Math.Log10(Math.Max(max, 10))));
        var y = new Scale(0, decades, bottom, top);
        double Y(ulong blocks) => y.Of(blocks <= 1 ? 0 : Math.Log10(blocks));
        DrawPause(g, t, x, top, height);
        for (var k = 0; k <= decades; k++)
        {
            var v = y.Of(k);
            g.Add(E("line", ("x1", F(x.Lo)), ("x2", F(x.Hi)), ("y1", F(v)), ("y2", F(v)), ("stroke", "#eeeeee")));
            g.Add(Text(x.Lo - 6, v + 4, k switch { 0 => "1", 1 => "10", 2 => "100", _ => $"10{Superscript(k)}" }, ("text-anchor", "end"), ("class", "y-tick")));
        }
        g.Add(Text(16, top + height / 2, "dirty blocks per round", ("transform", $"rotate(-90 16 {F(top + height / 2)})"), ("text-anchor", "middle")));
        foreach (var r in t.Rounds)
        {
            var cx = x.Of(r.T);
            var cy = Y(r.DirtyBlocks);
            g.Add(E("line", ("x1", F(cx)), ("x2", F(cx)), ("y1", F(bottom)), ("y2", F(cy)), ("stroke", RoundColour), ("stroke-width", 1.2)));
            g.Add(E("circle", ("class", "round"), ("data-round", r.Round), ("data-blocks", r.DirtyBlocks), ("cx", F(cx)), ("cy", F(cy)), ("r", 3), ("fill", RoundColour))
                .With(new XElement(Svg + "title", $"round {r.Round}{(r.Round == 0 ? " (bulk copy)" : "")}: {r.DirtyBlocks} blocks, {r.DirtyBytes / 1e6:0.0} MB, at {r.T:0.00} s")));
        }
        DrawMarks(g, t, x, top, height, labels: false);
        XAxis(g, x, bottom, ticks: true, 1, "time since the start (s)", 0);
        g.Add(E("rect", ("x", F(x.Lo)), ("y", F(top)), ("width", F(x.Hi - x.Lo)), ("height", F(height)), ("fill", "none"), ("stroke", "#999")));
    }

    private static void DrawPause(XElement g, Timeline t, Scale x, double top, double height)
    {
        if (t.Pause is not { } p) return;
        var x0 = Math.Clamp(x.Of(p.From), x.Lo, x.Hi);
        var x1 = Math.Clamp(x.Of(p.To), x.Lo, x.Hi);
        g.Add(E("rect", ("class", "pause"), ("data-from", F(p.From, "0.######")), ("data-to", F(p.To, "0.######")),
            ("x", F(x0)), ("y", F(top)), ("width", F(x1 - x0)), ("height", F(height)), ("fill", "#7f7f7f"), ("fill-opacity", 0.3)));
    }

    private static void DrawMarks(XElement g, Timeline t, Scale x, double top, double height, bool labels)
    {
        foreach (var (name, colour, label) in MarkStyles)
        {
            if (t.At(name) is not { } at) continue;
            var mx = x.Of(at);
            if (mx < x.Lo - 0.5 || mx > x.Hi + 0.5) continue;
            g.Add(E("line", ("class", "mark"), ("data-mark", name), ("x1", F(mx)), ("x2", F(mx)), ("y1", F(top)), ("y2", F(top + height)),
                ("stroke", colour), ("stroke-width", 1.5)).With(new XElement(Svg + "title", $"{name} at {at:0.000} s")));
            if (!labels) continue;
            // one row per mark, so that marks a few ms apart stay readable; flipped to the left near the right edge
            var row = Array.FindIndex(MarkStyles, m => m.Name == name);
            var leftOfLine = mx > x.Hi - 70;
            g.Add(Text(leftOfLine ? mx - 3 : mx + 3, top + 12 + 12 * row, label, ("fill", colour), ("font-size", 10), ("font-weight", "bold"),
                ("text-anchor", leftOfLine ? "end" : "start"), ("class", "mark-label")));
        }
    }

    private static void YAxis(XElement g, Scale y, Scale x, string label)
    {
        foreach (var v in Ticks(y.From, y.To, 4))
        {
            var py = y.Of(v);
            g.Add(E("line", ("x1", F(x.Lo)), ("x2", F(x.Hi)), ("y1", F(py)), ("y2", F(py)), ("stroke", "#eeeeee")));
            g.Add(Text(x.Lo - 6, py + 4, Num(v), ("text-anchor", "end"), ("class", "y-tick")));
        }
        var mid = (y.Lo + y.Hi) / 2;
        g.Add(Text(16, mid, label, ("transform", $"rotate(-90 16 {F(mid)})"), ("text-anchor", "middle")));
    }

    private static void XAxis(XElement g, Scale x, double bottom, bool ticks, double tickScale, string unit, double origin)
    {
        if (!ticks) return;
        foreach (var v in Ticks((x.From - origin) * tickScale, (x.To - origin) * tickScale, 10))
        {
            var px = x.Of(origin + v / tickScale);
            if (px < x.Lo - 0.5 || px > x.Hi + 0.5) continue;
            g.Add(E("line", ("x1", F(px)), ("x2", F(px)), ("y1", F(bottom)), ("y2", F(bottom + 4)), ("stroke", "#333")));
            g.Add(Text(px, bottom + 15, Num(v), ("text-anchor", "middle"), ("class", "x-tick")));
        }
        g.Add(Text((x.Lo + x.Hi) / 2, bottom + 29, unit, ("text-anchor", "middle"), ("class", "x-label")));
    }

    private static void DrawLegend(XElement root, Timeline t, double y)
    {
        var items = new List<(string Colour, string Label, string Kind)>
        {
            (DiskColour, "disk (bytes the engine sent)", "area"),
            (MemoryColour, t.HasMemory ? "memory (bytes the hypervisor sent)" : "memory: not reported by this hypervisor", t.HasMemory ? "area" : "none"),
            (ThrottleColour, "throttle on guest writes", "dash"),
            (RoundColour, "blocks per round", "dot"),
        };
        if (t.Pause is { } p)
            items.Add(("#7f7f7f", p.GuestPause ? $"guest paused {(p.To - p.From) * 1000:0} ms (STOP→RESUME)" : $"switchover {(p.To - p.From) * 1000:0} ms (STOP→hand-over)", "area"));
        var g = G("legend");
        var px = Left;
        foreach (var (colour, label, kind) in items)
        {
            var width = 22 + label.Length * 5.9;
            if (px + width > Right + 20 && px > Left)
            {
                px = Left;
                y += 16;
            }
            switch (kind)
            {
                case "area": g.Add(E("rect", ("x", F(px)), ("y", F(y - 9)), ("width", 12), ("height", 10), ("fill", colour), ("fill-opacity", colour == "#7f7f7f" ? 0.3 : 0.75))); break;
                case "dash": g.Add(E("line", ("x1", F(px)), ("x2", F(px + 12)), ("y1", F(y - 4)), ("y2", F(y - 4)), ("stroke", colour), ("stroke-width", 1.5), ("stroke-dasharray", "4,2"))); break;
                case "dot": g.Add(E("circle", ("cx", F(px + 6)), ("cy", F(y - 4)), ("r", 3), ("fill", colour))); break;
            }
            g.Add(Text(px + 16, y, label, ("class", "legend-item")));
            px += width;
        }
        root.Add(g);
    }

    private static XElement Area(List<(double T, double Lo, double Hi)> points, Scale x, Scale y, string colour, string name, string clip)
    {
        var d = new System.Text.StringBuilder();
        for (var i = 0; i < points.Count; i++)
            d.Append(i == 0 ? 'M' : 'L').Append(F(x.Of(points[i].T))).Append(',').Append(F(y.Of(points[i].Hi))).Append(' ');
        for (var i = points.Count - 1; i >= 0; i--)
            d.Append('L').Append(F(x.Of(points[i].T))).Append(',').Append(F(y.Of(points[i].Lo))).Append(' ');
        d.Append('Z');
        return E("path", ("class", "series"), ("data-series", name), ("data-points", points.Count), ("d", d.ToString()), ("fill", colour), ("fill-opacity", 0.75),
            ("stroke", colour), ("stroke-width", 0.8), ("clip-path", clip));
    }

    /// <summary>A linear map from [From, To] to pixels [Lo, Hi] (Hi may be above Lo: y grows downwards).</summary>
    private readonly record struct Scale(double From, double To, double Lo, double Hi)
    {
        public double Of(double v) => Lo + (v - From) / (To - From) * (Hi - Lo);
    }

    /// <summary>1, 2 or 5 × 10ⁿ steps covering [from, to], about <paramref name="count"/> of them.</summary>
    internal static IEnumerable<double> Ticks(double from, double to, int count)
    {
        var step = NiceStep((to - from) / count);
        for (var v = Math.Ceiling(from / step - 1e-9) * step; v <= to + step * 1e-9; v += step)
            yield return Math.Round(v / step) * step;
    }

    private static double NiceStep(double raw)
    {
        if (!(raw > 0)) return 1;
        var p = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        var m = raw / p;
        return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
    }

    /// <summary>The smallest 1, 2, 2.5, 5 × 10ⁿ at least <paramref name="v"/>: the axis' end.</summary>
    internal static double NiceCeiling(double v)
    {
        var p = Math.Pow(10, Math.Floor(Math.Log10(v)));
        foreach (var m in new[] { 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10 })
            if (m * p >= v * (1 - 1e-9)) return m * p;
        return 10 * p;
    }

    private static string PhaseName(MigrationPhase p) => p switch
    {
        MigrationPhase.BulkCopy => "bulk copy",
        MigrationPhase.DirtyRounds => "dirty rounds",
        MigrationPhase.FinalBlocks => "final blocks",
        _ => p.ToString().ToLowerInvariant(),
    };

    private static string Superscript(int k) => string.Concat(k.ToString(Inv).Select(c => "⁰¹²³⁴⁵⁶⁷⁸⁹"[c - '0']));

    private static string Num(double v) => Math.Abs(v) < 1e-9 ? "0" : v.ToString(Math.Abs(v) >= 100 || v == Math.Round(v) ? "0" : "0.###", Inv);

    private static string F(double v, string format = "0.##") => v.ToString(format, Inv);

    private static XElement G(string id) => new(Svg + "g", new XAttribute("id", id));

    private static XElement E(string name, params (string Name, object Value)[] attributes) =>
        new(Svg + name, attributes.Select(a => new XAttribute(a.Name, a.Value is double d ? F(d) : Convert.ToString(a.Value, Inv)!)));

    private static XElement Text(double x, double y, string text, params (string Name, object Value)[] attributes)
    {
        var e = E("text", [("x", F(x)), ("y", F(y)), .. attributes]);
        e.Value = text;
        return e;
    }

    private static XElement With(this XElement e, XElement child)
    {
        e.Add(child);
        return e;
    }
}
