using NUnit.Framework;

namespace BlockMigrate.Network.Tests;

/// <summary>
/// The shell the tunnel opens on each host at prepare and uses for its switch at the freeze
/// (<see cref="HostShell"/>): it runs ip lines in the host's namespace, in order, says which failed and
/// why, and once gone is reported unusable (the tunnel then starts ip itself).
/// </summary>
[TestFixture]
public sealed class HostShellTests
{
    readonly string _ns = $"bmsh{Environment.ProcessId % 100000}-{Guid.NewGuid().ToString("N")[..6]}";

    [SetUp]
    public async Task CreateNamespace() => await Sh.RunAsync($"ip netns add {_ns}");

    [TearDown]
    public async Task DeleteNamespace() => await Sh.TryAsync($"ip netns del {_ns}");

    [Test, CancelAfter(30_000)]
    public async Task Runs_ip_lines_in_the_hosts_namespace_and_reports_the_failing_one(CancellationToken ct)
    {
        var shell = CommandPrefixRunner.InNamespace(_ns).StartShell();
        Assert.That(shell, Is.Not.Null);
        await using (shell!)
        {
            var (usable, error) = await shell.RunIpAsync(["link add bmsh0 type veth peer name bmsh0p", "addr add 10.201.0.1/24 dev bmsh0"], TimeSpan.FromSeconds(10), ct);
            Assert.That((usable, error), Is.EqualTo((true, (string?)null)));
            Assert.That(await Sh.RunAsync("ip -o addr show dev bmsh0", _ns, ct), Does.Contain("10.201.0.1/24"), "it ran in the namespace");
            Assert.That(await Sh.RunAsync("ip -o link show", null, ct), Does.Not.Contain("bmsh0"), "not in the host's");

            // the second line fails: the third does not run, the error is ip's own
            (usable, error) = await shell.RunIpAsync(["rule add to 10.201.0.9/32 lookup 45999 pref 4242", "link add bmsh0 type veth peer name bmsh0q", "link add bmsh1 type veth peer name bmsh1p"],
                TimeSpan.FromSeconds(10), ct);
            Assert.That(usable, Is.True);
            Assert.That(error, Does.Contain("File exists"));
            Assert.That(await Sh.RunAsync("ip rule show pref 4242", _ns, ct), Does.Contain("10.201.0.9"));
            Assert.That(await Sh.RunAsync("ip -o link show", _ns, ct), Does.Not.Contain("bmsh1"));

            // still usable after a failed line
            (usable, error) = await shell.RunIpAsync(["rule del to 10.201.0.9/32 lookup 45999 pref 4242"], TimeSpan.FromSeconds(10), ct);
            Assert.That((usable, error), Is.EqualTo((true, (string?)null)));
        }
    }

    [Test, CancelAfter(30_000)]
    public async Task A_shell_that_is_gone_is_reported_unusable(CancellationToken ct)
    {
        var shell = HostShell.Start("sh", ["-c", "exit 0"]);
        Assert.That(shell, Is.Not.Null);
        await using (shell!)
        {
            await Task.Delay(300, ct);
            var (usable, error) = await shell.RunIpAsync(["-V"], TimeSpan.FromSeconds(5), ct);
            Assert.That(usable, Is.False);
            Assert.That(error, Is.Not.Null);
        }
        Assert.That(HostShell.Start("/nonexistent/sh", []), Is.Null);
    }

    [Test, CancelAfter(30_000)]
    public async Task A_shell_that_does_not_answer_is_reported_unusable_after_the_timeout(CancellationToken ct)
    {
        var shell = HostShell.Start("sh", ["-c", "sleep 20"]);   // reads nothing, answers nothing
        await using (shell!)
        {
            var (usable, error) = await shell!.RunIpAsync(["-V"], TimeSpan.FromMilliseconds(500), ct);
            Assert.That(usable, Is.False);
            Assert.That(error, Does.Contain("no answer"));
            (usable, _) = await shell.RunIpAsync(["-V"], TimeSpan.FromSeconds(5), ct);
            Assert.That(usable, Is.False, "not used again");
        }
    }
}
