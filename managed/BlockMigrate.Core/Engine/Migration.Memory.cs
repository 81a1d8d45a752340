using BlockMigrate.Hypervisors;

namespace BlockMigrate.Engine;

public sealed partial class Migration
{
    private static readonly TimeSpan MemoryRoundEvery = TimeSpan.FromMilliseconds(250);
    private volatile bool _stopMemoryRounds;
    private readonly TaskCompletionSource _memoryRoundsStop = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task? _memoryRounds;
    private Exception? _memoryRoundsFailure;

    /// <summary>
    /// The memory phase: the hypervisor moves memory and device state while the disks keep going in
    /// small dirty rounds (every 250 ms, each sent and acknowledged before the next). A memory copy
    /// can take minutes on a slow link; without these rounds everything the guest wrote meanwhile would
    /// wait for the final set, inside the downtime (or, in gate mode, competing with the hypervisor's
    /// last stage for the link). The switchover stops them first (<see cref="StopMemoryRoundsAsync"/>):
    /// a round under way finishes, so no frame of it can follow the final set. A failed round cancels
    /// the hypervisor's migration (the source keeps running) and is what the migration fails with.
    /// </summary>
    private async Task<HypervisorReport> MigrateMemoryAsync(CancellationToken ct)
    {
        SetPhase(MigrationPhase.Memory);
        foreach (var d in _disks) d.SyncOutstanding();
        if (_rates.LinkRate is { } rate)
        {
            Say($"link measured by the disk copy: {rate / 1e6:0.0} MB/s on the wire");
            _hypervisor.LinkRateMeasured(rate);
        }
        _hypervisor.SharesLinkWith(() => _channel?.Counter.BytesWritten ?? 0);
        using var memory = CancellationTokenSource.CreateLinkedTokenSource(ct);
        _memoryRounds = Task.Run(() => MemoryRoundsAsync(memory), CancellationToken.None);
        try
        {
            return await _hypervisor.MigrateAsync(SwitchoverAsync, memory.Token);
        }
        catch (OperationCanceledException) when (_memoryRoundsFailure is { } failure && !ct.IsCancellationRequested)
        {
            throw failure;
        }
        finally
        {
            await StopMemoryRoundsAsync();
        }
    }

    private async Task MemoryRoundsAsync(CancellationTokenSource memory)
    {
        try
        {
            while (!_stopMemoryRounds)
            {
                await Task.WhenAny(_memoryRoundsStop.Task, Task.Delay(MemoryRoundEvery, memory.Token));
                if (_stopMemoryRounds || Dirty().Blocks == 0) continue;
                _round++;
                var stats = await TakeAndSendAsync(memory.Token);
                Say($"round {_round} during the memory copy: {Mib(stats.BlockBytes)} in {stats.Elapsed.TotalMilliseconds:0} ms");
            }
        }
        catch (OperationCanceledException) when (memory.IsCancellationRequested)
        {
            // the migration is being cancelled or failed elsewhere
        }
        catch (Exception e)
        {
            _memoryRoundsFailure = e;
            await memory.CancelAsync();
        }
    }

    /// <summary>Stops the rounds of the memory phase; returns once the one under way (if any) is sent and acknowledged.</summary>
    private async Task StopMemoryRoundsAsync()
    {
        _stopMemoryRounds = true;
        _memoryRoundsStop.TrySetResult();
        if (_memoryRounds != null) await _memoryRounds;
        if (_memoryRoundsFailure is { } failure) throw failure;
    }
}
