using System.Text;
using System.Text.Json;
using BlockMigrate.Cli.Commands;
using BlockMigrate.Engine;
using BlockMigrate.Hypervisors;

namespace BlockMigrate.Engine.Tests;

/// <summary>The report's post-copy figures (QEMU <c>--postcopy</c>): in the JSON and a text line when post-copy was used, null and no line otherwise.</summary>
[TestFixture]
public sealed class PostcopyReportTests
{
    private static MigrationReport Report(HypervisorReport hv) =>
        new(20, 10, 1, 1, 1, 0, 1, 1, 0, 0, null, true, 0, 0, "qemu", ["vda"]) { HypervisorDetails = hv };

    private static readonly HypervisorReport Precopy = new("qemu", TimeSpan.FromSeconds(19), TimeSpan.FromMilliseconds(23), TimeSpan.FromMilliseconds(102), 80_000_000);

    private static JsonElement Json(HypervisorReport hv)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream))
        {
            w.WriteStartObject();
            HypervisorCliOptions.WriteJson(w, Report(hv));
            w.WriteEndObject();
        }
        return JsonDocument.Parse(Encoding.UTF8.GetString(stream.ToArray())).RootElement.Clone();
    }

    private static string Text(HypervisorReport hv)
    {
        var o = new StringWriter();
        HypervisorCliOptions.WriteText(o, Report(hv));
        return o.ToString();
    }

    [Test]
    public void Post_copy_figures_are_reported_when_used()
    {
        var hv = Precopy with { PostcopyAfter = TimeSpan.FromSeconds(18.4), PostcopyBytes = 3_200_000, PostcopyTail = TimeSpan.FromMilliseconds(303) };
        var j = Json(hv);
        Assert.That(j.GetProperty("postcopy_after_seconds").GetDouble(), Is.EqualTo(18.4));
        Assert.That(j.GetProperty("postcopy_bytes").GetInt64(), Is.EqualTo(3_200_000));
        Assert.That(j.GetProperty("postcopy_tail_ms").GetDouble(), Is.EqualTo(303));
        Assert.That(Text(hv), Does.Contain("post-copy:    from 18.4 s into the memory copy").And.Contain("the last 303 ms while the guest already ran at the destination"));
    }

    [Test]
    public void Without_post_copy_the_figures_are_null_and_the_text_has_no_line()
    {
        var j = Json(Precopy);
        foreach (var key in new[] { "postcopy_after_seconds", "postcopy_bytes", "postcopy_tail_ms" })
            Assert.That(j.GetProperty(key).ValueKind, Is.EqualTo(JsonValueKind.Null), key);
        Assert.That(Text(Precopy), Does.Not.Contain("post-copy"));
    }
}
