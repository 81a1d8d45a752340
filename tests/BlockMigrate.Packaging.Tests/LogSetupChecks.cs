using BlockMigrate.Cli.Logging;
using NLog;

namespace BlockMigrate.Packaging.Tests;

[TestFixture]
public class LogSetupChecks
{
    private static LogEventInfo Event(LogLevel level, string message) => new(level, "receive", message);

    [Test]
    public void Journal_lines_carry_the_syslog_priority_and_no_timestamp()
    {
        Assert.Multiple(() =>
        {
            Assert.That(LogSetup.Format(LogStyle.Journal, Event(LogLevel.Error, "link lost")), Is.EqualTo("<3>link lost"));
            Assert.That(LogSetup.Format(LogStyle.Journal, Event(LogLevel.Warn, "w")), Is.EqualTo("<4>w"));
            Assert.That(LogSetup.Format(LogStyle.Journal, Event(LogLevel.Info, "i")), Is.EqualTo("<6>i"));
            Assert.That(LogSetup.Format(LogStyle.Journal, Event(LogLevel.Debug, "d")), Is.EqualTo("<7>d"));
            Assert.That(LogSetup.Format(LogStyle.Journal, Event(LogLevel.Fatal, "f")), Is.EqualTo("<2>f"));
            Assert.That(LogSetup.Format(LogStyle.Journal, Event(LogLevel.Info, "two\nlines")), Is.EqualTo("<6>two lines"));
        });
    }

    [Test]
    public void Terminal_lines_are_plain_for_info_and_prefixed_otherwise()
    {
        Assert.Multiple(() =>
        {
            Assert.That(LogSetup.Format(LogStyle.Terminal, Event(LogLevel.Info, "round 3: 12 MiB")), Is.EqualTo("round 3: 12 MiB"));
            Assert.That(LogSetup.Format(LogStyle.Terminal, Event(LogLevel.Error, "no route")), Is.EqualTo("blockmigrate: error: no route"));
        });
    }

    [Test]
    public void Journal_is_detected_only_when_stderr_is_the_named_stream()
    {
        Assert.Multiple(() =>
        {
            Assert.That(LogSetup.IsJournalStream("8:12345", 12345), Is.True);
            Assert.That(LogSetup.IsJournalStream("8:12345", 999), Is.False);
            Assert.That(LogSetup.IsJournalStream("8:12345", null), Is.False);
            Assert.That(LogSetup.IsJournalStream(null, 12345), Is.False);
            Assert.That(LogSetup.IsJournalStream("garbage", 12345), Is.False);
        });
    }

    [Test]
    public void Verbose_and_quiet_choose_the_minimum_level()
    {
        Assert.Multiple(() =>
        {
            Assert.That(LogSetup.MinimumLevel(verbose: false, quiet: false), Is.EqualTo(LogLevel.Info));
            Assert.That(LogSetup.MinimumLevel(verbose: true, quiet: false), Is.EqualTo(LogLevel.Trace));
            Assert.That(LogSetup.MinimumLevel(verbose: false, quiet: true), Is.EqualTo(LogLevel.Warn));
        });
    }
}
