namespace BlockMigrate.Network;

/// <summary>Does nothing: for dry runs, tests, and VMs whose address moves with them (same LAN segment).</summary>
public sealed class NoneRedirector : IRedirector
{
    /// <inheritdoc/>
    public string Kind => "none";

    /// <inheritdoc/>
    public RedirectionReport Report { get; } = new() { Redirector = "none" };

    /// <inheritdoc/>
    public Task<RedirectionReport> PrepareAsync(CancellationToken cancellationToken) => Done(cancellationToken);

    /// <inheritdoc/>
    public Task<RedirectionReport> DivertAsync(CancellationToken cancellationToken) => Done(cancellationToken);

    /// <inheritdoc/>
    public Task<RedirectionReport> RedirectAsync(CancellationToken cancellationToken) => Done(cancellationToken);

    /// <inheritdoc/>
    public Task<RedirectionReport> WaitDrainedAndTeardownAsync(CancellationToken cancellationToken) => Done(cancellationToken);

    /// <inheritdoc/>
    public Task<RedirectionReport> AbortAsync(CancellationToken cancellationToken) => Done(cancellationToken);

    Task<RedirectionReport> Done(CancellationToken ct) =>
        ct.IsCancellationRequested ? Task.FromCanceled<RedirectionReport>(ct) : Task.FromResult(Report);
}
