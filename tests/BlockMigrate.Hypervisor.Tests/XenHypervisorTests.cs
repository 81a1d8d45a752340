using BlockMigrate.Hypervisors;
using BlockMigrate.Hypervisors.Xen;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>XenHypervisor against a fake xl (no Xen here): the exact command lines, their order, and the aborts.</summary>
[TestFixture]
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class XenHypervisorTests
{
    private FakeXl _xl = null!;

    [SetUp]
    public void CreateFake()
    {
        _xl = new FakeXl();
        _xl.SetDomain("src", "vm1", FakeXl.Running);
    }

    [TearDown]
    public void RemoveFake() => _xl?.Dispose();

    private static readonly string[] PrepareCalls =
    [
        "xl@src list vm1",
        "ssh dsthost xl list vm1",
        "xl@dst list vm1",
    ];

    [Test, CancelAfter(30_000)]
    public async Task Migrate_runs_switchover_while_the_domain_waits_paused_then_unpauses_it(CancellationToken ct)
    {
        await using var hv = new XenHypervisor(_xl.Options("vm1", sshCommand: "ssh -p 2222"));
        await hv.PrepareAsync(ct);
        string? sourceInCallback = "?", destinationInCallback = null;
        var report = await hv.MigrateAsync(_ =>
        {
            sourceInCallback = _xl.Domain("src", "vm1");
            destinationInCallback = _xl.Domain("dst", "vm1");
            _xl.Mark("SWITCHOVER");
            return Task.CompletedTask;
        }, ct);

        Assert.That(_xl.Calls(), Is.EqualTo(PrepareCalls.Concat(
        [
            "xl@src migrate -p -s 'ssh -p 2222' vm1 dsthost",
            "SWITCHOVER",
            "ssh dsthost xl unpause vm1",
            "xl@dst unpause vm1",
        ])));
        Assert.That(sourceInCallback, Is.Null, "the source domain is gone when switchover runs");
        Assert.That(destinationInCallback, Is.EqualTo(FakeXl.Paused), "the destination domain waits paused during switchover");
        Assert.That(_xl.Domain("dst", "vm1"), Is.EqualTo(FakeXl.Running));
        Assert.That(report.Hypervisor, Is.EqualTo("xen"));
        Assert.That(report.Switchover, Is.Not.Null);
    }

    [Test, CancelAfter(30_000)]
    public async Task Without_ssh_command_xl_migrate_gets_no_s_option(CancellationToken ct)
    {
        await using var hv = new XenHypervisor(_xl.Options("vm1"));
        await hv.PrepareAsync(ct);
        await hv.MigrateAsync(_ => Task.CompletedTask, ct);
        Assert.That(_xl.Calls(), Does.Contain("xl@src migrate -p vm1 dsthost"));
    }

    [Test, CancelAfter(30_000)]
    public async Task Failed_xl_migrate_aborts_and_destroys_the_half_built_destination_domain(CancellationToken ct)
    {
        _xl.MigrateOutcome = "fail-leftover";
        var switchoverRan = false;
        await using var hv = new XenHypervisor(_xl.Options("vm1"));
        await hv.PrepareAsync(ct);
        var e = Assert.ThrowsAsync<HypervisorException>(() => hv.MigrateAsync(_ => { switchoverRan = true; return Task.CompletedTask; }, ct));
        Assert.That(e!.Message, Does.Contain("resuming at sender"));
        await hv.AbortAsync(ct);

        Assert.That(switchoverRan, Is.False);
        Assert.That(_xl.Calls(), Is.EqualTo(PrepareCalls.Concat(
        [
            "xl@src migrate -p vm1 dsthost",
            "xl@src list vm1",
            "ssh dsthost xl list vm1--incoming",
            "xl@dst list vm1--incoming",
            "ssh dsthost xl destroy vm1--incoming",
            "xl@dst destroy vm1--incoming",
        ])));
        Assert.That(_xl.Domain("src", "vm1"), Is.EqualTo(FakeXl.Running));
        Assert.That(_xl.Domain("dst", "vm1--incoming"), Is.Null);
    }

    [Test, CancelAfter(30_000)]
    public async Task Abort_unpauses_a_source_domain_left_paused(CancellationToken ct)
    {
        _xl.MigrateOutcome = "fail-paused";
        await using var hv = new XenHypervisor(_xl.Options("vm1"));
        await hv.PrepareAsync(ct);
        Assert.ThrowsAsync<HypervisorException>(() => hv.MigrateAsync(_ => Task.CompletedTask, ct));
        await hv.AbortAsync(ct);

        Assert.That(_xl.Calls()[PrepareCalls.Length..], Is.EqualTo(new[]
        {
            "xl@src migrate -p vm1 dsthost",
            "xl@src list vm1",
            "ssh dsthost xl list vm1--incoming",
            "xl@dst list vm1--incoming",
            "xl@src unpause vm1",
        }));
        Assert.That(_xl.Domain("src", "vm1"), Is.EqualTo(FakeXl.Running));
    }

    [Test, CancelAfter(30_000)]
    public async Task Abort_of_a_suspended_source_says_what_the_admin_must_do(CancellationToken ct)
    {
        _xl.MigrateOutcome = "fail-suspended";
        await using var hv = new XenHypervisor(_xl.Options("vm1"));
        await hv.PrepareAsync(ct);
        Assert.ThrowsAsync<HypervisorException>(() => hv.MigrateAsync(_ => Task.CompletedTask, ct));
        var e = Assert.ThrowsAsync<HypervisorException>(() => hv.AbortAsync(ct));
        Assert.That(e!.Message, Does.Contain("suspended").And.Contain("xl create"));
        Assert.That(_xl.Calls(), Has.None.Contains("unpause").And.None.Contains("destroy"));
    }

    [Test, CancelAfter(30_000)]
    public async Task Cancelling_during_xl_migrate_interrupts_it_and_abort_checks_both_ends(CancellationToken ct)
    {
        _xl.MigrateOutcome = "hang";
        await using var hv = new XenHypervisor(_xl.Options("vm1"));
        await hv.PrepareAsync(ct);
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cancel.CancelAfter(TimeSpan.FromMilliseconds(500));
        var started = DateTime.UtcNow;
        Assert.That(() => hv.MigrateAsync(_ => Task.CompletedTask, cancel.Token), Throws.InstanceOf<OperationCanceledException>());
        Assert.That(DateTime.UtcNow - started, Is.LessThan(TimeSpan.FromSeconds(10)), "xl migrate was not interrupted");
        await hv.AbortAsync(ct);

        Assert.That(_xl.Calls()[PrepareCalls.Length..], Is.EqualTo(new[]
        {
            "xl@src migrate -p vm1 dsthost",
            "xl@src list vm1",
            "ssh dsthost xl list vm1--incoming",
            "xl@dst list vm1--incoming",
        }));
        Assert.That(_xl.Domain("src", "vm1"), Is.EqualTo(FakeXl.Running));
    }

    [Test, CancelAfter(30_000)]
    public async Task Abort_after_handover_keeps_the_paused_destination_domain(CancellationToken ct)
    {
        await using var hv = new XenHypervisor(_xl.Options("vm1"));
        await hv.PrepareAsync(ct);
        Assert.ThrowsAsync<InvalidOperationException>(() =>
            hv.MigrateAsync(_ => throw new InvalidOperationException("disk commit failed"), ct));
        var e = Assert.ThrowsAsync<HypervisorException>(() => hv.AbortAsync(ct));

        Assert.That(e!.Message, Does.Contain("PAUSED on dsthost").And.Contain("not destroyed"));
        Assert.That(_xl.Calls(), Is.EqualTo(PrepareCalls.Append("xl@src migrate -p vm1 dsthost")));
        Assert.That(_xl.Domain("dst", "vm1"), Is.EqualTo(FakeXl.Paused), "the only copy of the VM must survive");
    }

    [Test, CancelAfter(30_000)]
    public async Task Prepare_refuses_when_the_destination_already_has_the_domain(CancellationToken ct)
    {
        _xl.SetDomain("dst", "vm1", FakeXl.Running);
        await using var hv = new XenHypervisor(_xl.Options("vm1"));
        var e = Assert.ThrowsAsync<HypervisorException>(() => hv.PrepareAsync(ct));
        Assert.That(e!.Message, Does.Contain("dsthost already has a domain 'vm1'"));
        Assert.That(_xl.Calls(), Is.EqualTo(PrepareCalls));
    }

    [Test, CancelAfter(30_000)]
    public async Task Prepare_refuses_an_unknown_domain(CancellationToken ct)
    {
        await using var hv = new XenHypervisor(_xl.Options("nosuchvm"));
        var e = Assert.ThrowsAsync<HypervisorException>(() => hv.PrepareAsync(ct));
        Assert.That(e!.Message, Does.Contain("no domain 'nosuchvm'"));
        Assert.That(_xl.Calls(), Is.EqualTo(new[] { "xl@src list nosuchvm" }));
    }

    [Test]
    public void A_domain_name_that_a_remote_shell_would_interpret_is_refused()
    {
        Assert.Throws<HypervisorException>(() => new XenHypervisor(_xl.Options("vm1; rm -rf /")));
    }
}
