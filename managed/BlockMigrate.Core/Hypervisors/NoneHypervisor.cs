namespace BlockMigrate.Hypervisors;

/// <summary>Disk only: there is no VM state to move, so the switchover happens straight away.</summary>
public sealed class NoneHypervisor : IHypervisor
{
    public string Name => "none";

    public Task PrepareAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task<HypervisorReport> MigrateAsync(Func<CancellationToken, Task> switchover, CancellationToken cancellationToken)
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        await switchover(cancellationToken);
        return new HypervisorReport(Name, System.Diagnostics.Stopwatch.GetElapsedTime(started), null, null, 0);
    }

    public Task AbortAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
