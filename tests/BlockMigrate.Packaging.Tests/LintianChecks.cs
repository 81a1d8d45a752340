namespace BlockMigrate.Packaging.Tests;

[TestFixture]
public class LintianChecks
{
    [Test]
    public void Package_has_no_lintian_errors_or_warnings()
    {
        if (!Tool.Exists("lintian")) Assert.Fail("lintian is not installed (tools/install-deps.sh installs it)");
        // --pedantic so that P: tags show too; only E: and W: fail the check (overrides carry reasons
        // in packaging/debian/lintian-overrides and are applied by lintian itself)
        var r = Tool.Run("lintian", ["--pedantic", "--no-tag-display-limit", Package.Deb], TimeSpan.FromMinutes(5));
        TestContext.Out.WriteLine(r.Stdout);
        var bad = r.Stdout.Split('\n').Where(l => l.StartsWith("E: ") || l.StartsWith("W: ")).ToList();
        Assert.That(bad, Is.Empty, "lintian tags:\n" + r);
        // 0: clean; 2: only tags below the fail-on level.  Anything else is lintian failing to run.
        Assert.That(r.ExitCode, Is.EqualTo(0).Or.EqualTo(2), r.ToString());
    }
}
