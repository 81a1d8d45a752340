// The man page and the bash completion describe the command line; these checks keep them in
// step with what the built executable's --help says (commands and options).
using System.Text.RegularExpressions;

namespace BlockMigrate.Packaging.Tests;

[TestFixture]
public partial class DocsChecks
{
    private static string Exe => Path.Combine(Package.StagedRoot, "usr/bin/blockmigrate");
    private static string Man => File.ReadAllText(Path.Combine(Tool.Top, "packaging/man/blockmigrate.1")).Replace("\\-", "-");
    private static string Completion => File.ReadAllText(Path.Combine(Tool.Top, "packaging/completion/blockmigrate"));

    // the staged executable links libblockmigrate.so.1, which is staged beside it, not installed
    private static string Help(params string[] args)
    {
        var r = Tool.Run(Exe, [.. args, "--help"], TimeSpan.FromMinutes(1),
            new Dictionary<string, string> { ["LD_LIBRARY_PATH"] = Path.Combine(Package.StagedRoot, "usr/lib/x86_64-linux-gnu") });
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        return r.Stdout;
    }

    private static List<string> Commands()
    {
        var help = Help();
        var section = help[(help.IndexOf("Commands:", StringComparison.Ordinal) + 9)..];
        return CommandLine().Matches(section).Select(m => m.Groups[1].Value).ToList();
    }

    private static List<string> Options(string command) =>
        LongOption().Matches(Help(command)).Select(m => m.Value).Distinct()
            .Where(o => o != "--help").ToList();

    [Test]
    public void Every_command_and_option_is_in_the_man_page_and_the_completion()
    {
        var commands = Commands();
        Assert.That(commands, Is.Not.Empty, "commands from --help");
        var man = Man;
        var completion = Completion;
        Assert.Multiple(() =>
        {
            foreach (var command in commands)
            {
                Assert.That(man, Does.Contain($".SS \"{command}").Or.Contain($".SS {command}"), $"man page section for {command}");
                Assert.That(completion, Does.Contain($"{command})"), $"completion case for {command}");
                foreach (var option in Options(command))
                {
                    Assert.That(man, Does.Contain(option), $"man page: {command} {option}");
                    Assert.That(completion, Does.Contain(option), $"completion: {command} {option}");
                }
            }
        });
    }

    [Test]
    public void Completion_offers_commands_and_their_options()
    {
        const string bashCompletion = "/usr/share/bash-completion/bash_completion";
        if (!File.Exists(bashCompletion)) Assert.Fail("bash-completion is not installed (tools/install-deps.sh installs it)");
        var script = $$"""
            source {{bashCompletion}}; source "$1"
            t() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=(); _blockmigrate; echo "${COMPREPLY[*]}"; }
            t blockmigrate ma; t blockmigrate -v migrate --peer; t blockmigrate migrate --hypervisor ""
            """;
        var r = Tool.Run("bash", ["-c", script, "bash", Path.Combine(Tool.Top, "packaging/completion/blockmigrate")], TimeSpan.FromMinutes(1));
        Assert.That(r.Stdout.Split('\n')[..3], Is.EqualTo(new[] { "map", "--peer-fingerprint", "qemu libvirt xen none" }), r.ToString());
    }

    [TestCase("blockmigrate.1")]
    [TestCase("blockmigrate.conf.5")]
    public void Man_page_renders_without_warnings(string page)
    {
        var r = Tool.Run("man", ["--warnings", "-l", Path.Combine(Tool.Top, "packaging/man", page)], TimeSpan.FromMinutes(1),
            new Dictionary<string, string> { ["MANWIDTH"] = "80", ["LC_ALL"] = "C.UTF-8" });
        Assert.Multiple(() =>
        {
            Assert.That(r.ExitCode, Is.Zero, r.ToString());
            Assert.That(r.Stderr, Is.Empty, r.ToString());
        });
    }

    [GeneratedRegex(@"(?m)^  ([a-z][a-z-]*)\b")]
    private static partial Regex CommandLine();

    [GeneratedRegex(@"--[a-z][a-z-]*")]
    private static partial Regex LongOption();
}
