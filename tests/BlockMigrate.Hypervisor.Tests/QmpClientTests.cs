using System.Text.Json.Nodes;
using BlockMigrate.Hypervisors.Qemu;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>Our QMP client against a real QEMU (no guest, CPUs stopped).</summary>
[TestFixture]
public sealed class QmpClientTests
{
    private static readonly TimeSpan Connect = TimeSpan.FromSeconds(10);
    private TempDir _dir = null!;
    private BareQemu _qemu = null!;

    [SetUp]
    public void StartQemu()
    {
        _dir = new TempDir("qmp");
        _qemu = BareQemu.Start(_dir.Path);
    }

    [TearDown]
    public void StopQemu()
    {
        _qemu?.Dispose();
        _dir?.Dispose();
    }

    [Test, CancelAfter(30_000)]
    public async Task Handshake_reads_the_greeting_and_negotiates_capabilities(CancellationToken ct)
    {
        await using var qmp = await QmpClient.ConnectAsync(_qemu.Socket, Connect, ct);
        Assert.That(qmp.QemuVersion.Major, Is.GreaterThanOrEqualTo(7));
        Assert.That(qmp.Greeting["capabilities"], Is.InstanceOf<JsonArray>());
        // only accepted after qmp_capabilities: proves the negotiation happened
        var status = await qmp.ExecuteObjectAsync("query-status", null, ct);
        Assert.That((string?)status["status"], Is.EqualTo("prelaunch"));
    }

    [Test, CancelAfter(30_000)]
    public async Task Handshake_works_over_tcp(CancellationToken ct)
    {
        await using var qmp = await QmpClient.ConnectAsync(_qemu.TcpAddress, Connect, ct);
        var version = await qmp.ExecuteObjectAsync("query-version", null, ct);
        Assert.That((int?)version["qemu"]?["major"], Is.EqualTo(qmp.QemuVersion.Major));
    }

    [Test, CancelAfter(30_000)]
    public async Task Execute_passes_arguments_and_returns_the_result(CancellationToken ct)
    {
        await using var qmp = await QmpClient.ConnectAsync(_qemu.Socket, Connect, ct);
        await qmp.ExecuteAsync("migrate-set-parameters", new JsonObject { ["downtime-limit"] = 123 }, ct);
        var p = await qmp.ExecuteObjectAsync("query-migrate-parameters", null, ct);
        Assert.That((long?)p["downtime-limit"], Is.EqualTo(123));
    }

    [Test, CancelAfter(30_000)]
    public async Task Concurrent_commands_get_their_own_replies(CancellationToken ct)
    {
        await using var qmp = await QmpClient.ConnectAsync(_qemu.Socket, Connect, ct);
        var tasks = Enumerable.Range(0, 20).Select(i => i % 2 == 0
            ? qmp.ExecuteObjectAsync("query-status", null, ct)
            : qmp.ExecuteObjectAsync("query-name", null, ct)).ToArray();
        var results = await Task.WhenAll(tasks);
        for (var i = 0; i < results.Length; i++)
            Assert.That(results[i].ContainsKey("status"), Is.EqualTo(i % 2 == 0), $"reply {i}: {results[i].ToJsonString()}");
    }

    [Test, CancelAfter(30_000)]
    public async Task Unknown_command_raises_QEMUs_error_class(CancellationToken ct)
    {
        await using var qmp = await QmpClient.ConnectAsync(_qemu.Socket, Connect, ct);
        var e = Assert.ThrowsAsync<QmpException>(() => qmp.ExecuteAsync("no-such-command", null, ct));
        Assert.That(e!.ErrorClass, Is.EqualTo("CommandNotFound"));
        Assert.That(e.Command, Is.EqualTo("no-such-command"));
        Assert.That(e.Message, Does.Contain("no-such-command"));
        // the connection is still usable after an error
        Assert.That((string?)(await qmp.ExecuteObjectAsync("query-status", null, ct))["status"], Is.EqualTo("prelaunch"));
    }

    [Test, CancelAfter(30_000)]
    public async Task Bad_arguments_raise_GenericError_with_QEMUs_description(CancellationToken ct)
    {
        await using var qmp = await QmpClient.ConnectAsync(_qemu.Socket, Connect, ct);
        var e = Assert.ThrowsAsync<QmpException>(() =>
            qmp.ExecuteAsync("migrate-set-parameters", new JsonObject { ["no-such-parameter"] = 1 }, ct));
        Assert.That(e!.ErrorClass, Is.EqualTo("GenericError"));
        Assert.That(e.Description, Does.Contain("no-such-parameter"));
    }

    [Test, CancelAfter(30_000)]
    public async Task Events_arrive_with_QEMUs_timestamps(CancellationToken ct)
    {
        await using var qmp = await QmpClient.ConnectAsync(_qemu.Socket, Connect, ct);
        using var events = qmp.Subscribe("RESUME", "STOP");
        var before = DateTimeOffset.UtcNow;
        await qmp.ExecuteAsync("cont", null, ct);
        var resume = await events.WaitAsync("RESUME", null, ct);
        await qmp.ExecuteAsync("stop", null, ct);
        var stop = await events.WaitAsync("STOP", null, ct);
        Assert.That(resume.Timestamp, Is.GreaterThan(before.AddSeconds(-2)).And.LessThan(DateTimeOffset.UtcNow.AddSeconds(2)));
        Assert.That(stop.Timestamp, Is.GreaterThanOrEqualTo(resume.Timestamp));
    }

    [Test, CancelAfter(30_000)]
    public async Task Subscription_filters_by_event_name(CancellationToken ct)
    {
        await using var qmp = await QmpClient.ConnectAsync(_qemu.Socket, Connect, ct);
        using var stops = qmp.Subscribe("STOP");
        await qmp.ExecuteAsync("cont", null, ct);
        await qmp.ExecuteAsync("stop", null, ct);
        var first = await stops.Reader.ReadAsync(ct);
        Assert.That(first.Name, Is.EqualTo("STOP"));
    }

    [Test, CancelAfter(30_000)]
    public async Task Migration_events_carry_their_status(CancellationToken ct)
    {
        await using var qmp = await QmpClient.ConnectAsync(_qemu.Socket, Connect, ct);
        await qmp.ExecuteAsync("migrate-set-capabilities", new JsonObject
        {
            ["capabilities"] = new JsonArray(new JsonObject { ["capability"] = "events", ["state"] = true }),
        }, ct);
        using var events = qmp.Subscribe("MIGRATION");
        // nobody listens there: the migration fails at once, after 'setup'
        await qmp.ExecuteAsync("migrate", new JsonObject { ["uri"] = "unix:" + _dir["nobody.sock"] }, ct);
        var failed = await events.WaitAsync("MIGRATION", e => e.DataString("status") == "failed", ct);
        Assert.That(failed.DataString("status"), Is.EqualTo("failed"));
    }

    [Test, CancelAfter(30_000)]
    public async Task QEMU_dying_fails_pending_waits_as_Disconnected(CancellationToken ct)
    {
        await using var qmp = await QmpClient.ConnectAsync(_qemu.Socket, Connect, ct);
        using var events = qmp.Subscribe();
        var waiting = events.WaitAsync("RESUME", null, ct);
        _qemu.Kill();
        var e = Assert.ThrowsAsync<QmpException>(async () => await waiting);
        Assert.That(e!.ErrorClass, Is.EqualTo(QmpException.DisconnectedClass));
        var e2 = Assert.ThrowsAsync<QmpException>(() => qmp.ExecuteAsync("query-status", null, ct));
        Assert.That(e2!.ErrorClass, Is.EqualTo(QmpException.DisconnectedClass));
        Assert.That(qmp.IsConnected, Is.False);
    }

    [Test, CancelAfter(30_000)]
    public async Task Connecting_to_a_missing_socket_fails_with_a_clear_message(CancellationToken ct)
    {
        var e = Assert.ThrowsAsync<QmpException>(() =>
            QmpClient.ConnectAsync(_dir["missing.qmp"], TimeSpan.FromMilliseconds(300), ct));
        Assert.That(e!.Message, Does.Contain("missing.qmp").And.Contain("-qmp"));
    }
}
