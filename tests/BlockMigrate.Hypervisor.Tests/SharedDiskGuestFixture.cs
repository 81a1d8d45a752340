using BlockMigrate.Hypervisors.Qemu;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// One TCG source guest on shared storage, booted once per fixture: both QEMUs attach to one export of our shim
/// (nbdkit + blockmigrate filter), so a test is about memory, device state and the switchover point. Destinations are
/// started per test (<see cref="StartDestination"/>) and stopped with the fixture, by PID, like everything else here.
/// </summary>
public abstract class SharedDiskGuestFixture
{
    protected static readonly TimeSpan Boot = TimeSpan.FromSeconds(60);
    protected TempDir _dir = null!;
    protected NbdkitServer _disk = null!;
    protected QemuGuest _source = null!;
    protected QmpClient _sourceObserver = null!;
    protected readonly List<QemuGuest> _destinations = [];

    /// <summary>The work directory's name prefix.</summary>
    protected abstract string DirName { get; }

    /// <summary>The shared disk's size in guest blocks.</summary>
    protected abstract int DiskBlocks { get; }

    /// <summary>The source's or a destination's options (an incoming destination starts paused).</summary>
    protected abstract QemuGuestOptions Guest(string name, bool incoming = false);

    /// <summary>What the booted source must have printed besides its writer's 100th block.</summary>
    protected virtual Task AfterBootAsync() => Task.CompletedTask;

    [OneTimeSetUp]
    public async Task BootSource()
    {
        _dir = new TempDir(DirName);
        await Tool.CheckAsync("truncate", ["-s", $"{DiskBlocks * GuestDisk.BlockSize}", _dir["disk.img"]]);
        _disk = NbdkitServer.Start(_dir.Path, NbdkitServer.FilterArgs(_dir["disk.img"], _dir["disk.map"]));
        _source = QemuGuest.Start(_dir.Path, Guest("src"));
        _sourceObserver = await QmpClient.ConnectAsync(_source.ObserverQmpSocket, TimeSpan.FromSeconds(10), CancellationToken.None);
        await _source.Serial.WaitForAsync(@"PROGRESS seq=100\b", Boot);
        await AfterBootAsync();
    }

    [OneTimeTearDown]
    public async Task StopAll()
    {
        if (_sourceObserver != null)
            await _sourceObserver.DisposeAsync();
        foreach (var d in _destinations)
            d.Dispose();
        _source?.Dispose();
        _disk?.Dispose();
        _dir?.Dispose();
    }

    protected QemuGuest StartDestination(string name)
    {
        var d = QemuGuest.Start(_dir.Path, Guest(name, incoming: true));
        _destinations.Add(d);
        return d;
    }

    protected static async Task<string> StatusAsync(QmpClient qmp, CancellationToken ct) =>
        (string?)(await qmp.ExecuteObjectAsync("query-status", null, ct))["status"] ?? "?";
}
