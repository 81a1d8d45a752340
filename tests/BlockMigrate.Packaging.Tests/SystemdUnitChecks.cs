// systemd-analyze on the shipped units.  It runs on the host (systemd need not be PID 1), and it
// checks that ExecStart binaries exist and are executable there, and that man: documentation
// exists.  So it verifies copies of the units in which /usr/bin/blockmigrate points at the
// staged, built executable, with MANPATH at the staged man pages; nbdkit is a build dependency
// and is on the host.  Any stderr output fails (systemd-analyze exits 0 on mere warnings).
using System.Globalization;
using System.Text.RegularExpressions;

namespace BlockMigrate.Packaging.Tests;

[TestFixture]
public partial class SystemdUnitChecks
{
    private string dir = "";

    private static readonly string[] Units = ["blockmigrate-receiver.service", "blockmigrate-shim@.service"];

    [OneTimeSetUp]
    public void CopyUnits()
    {
        dir = Directory.CreateTempSubdirectory("bm-units-").FullName;
        var staged = Package.StagedRoot; // builds the package when needed
        foreach (var unit in Units)
        {
            var text = File.ReadAllText(Path.Combine(Tool.Top, "packaging/systemd", unit));
            text = text.Replace("/usr/bin/blockmigrate ", Path.Combine(staged, "usr/bin/blockmigrate") + " ");
            File.WriteAllText(Path.Combine(dir, unit), text);
        }
    }

    [OneTimeTearDown]
    public void RemoveCopies() => Directory.Delete(dir, recursive: true);

    private Dictionary<string, string> Env() => new()
    {
        // trailing ":" appends the system man path (nbdkit(1) is documented too)
        ["MANPATH"] = Path.Combine(Package.StagedRoot, "usr/share/man") + ":",
        ["SYSTEMD_LOG_COLOR"] = "0",
    };

    [TestCase("blockmigrate-receiver.service")]
    [TestCase("blockmigrate-shim@.service")]
    public void Unit_verifies_without_any_message(string unit)
    {
        var r = Tool.Run("systemd-analyze", ["verify", Path.Combine(dir, unit)], TimeSpan.FromMinutes(2), Env(), dir);
        Assert.Multiple(() =>
        {
            Assert.That(r.Stderr, Is.Empty, r.ToString());
            Assert.That(r.ExitCode, Is.Zero, r.ToString());
        });
    }

    // systemd's scale (src/analyze/analyze-security.c): exposure 0 PERFECT, < 1 SAFE, < 5 OK,
    // < 7.5 MEDIUM, < 9 EXPOSED, < 10 UNSAFE, else DANGEROUS.  "No worse than MEDIUM" is < 7.5.
    [Test]
    public void Receiver_is_rated_no_worse_than_MEDIUM()
    {
        var r = Tool.Run("systemd-analyze", ["security", "--offline=yes", "--no-pager", Path.Combine(dir, "blockmigrate-receiver.service")],
            TimeSpan.FromMinutes(2), Env(), dir);
        var m = ExposureLine().Match(r.Stdout);
        Assert.That(m.Success, Is.True, "no overall exposure line:\n" + r);
        var score = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        var level = m.Groups[2].Value;
        TestContext.Out.WriteLine($"blockmigrate-receiver.service exposure {score:0.0} {level}");
        Assert.Multiple(() =>
        {
            Assert.That(level, Is.AnyOf("PERFECT", "SAFE", "OK", "MEDIUM"), r.Stdout);
            Assert.That(score, Is.LessThan(7.5), r.Stdout);
        });
    }

    [GeneratedRegex(@"Overall exposure level for \S+: (\d+\.\d) (\w+)")]
    private static partial Regex ExposureLine();
}
