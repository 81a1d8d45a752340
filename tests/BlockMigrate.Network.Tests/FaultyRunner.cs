using BlockMigrate.Network;

namespace BlockMigrate.Network.Tests;

/// <summary>Wraps a real runner; the first command matching <c>when</c> gets <c>fault</c> instead of running.</summary>
internal sealed class FaultyRunner(IHostRunner inner, Func<string, IReadOnlyList<string>, string?, bool> when,
    Func<string, HostCommandResult> fault) : IHostRunner
{
    int _fired;

    public string Description => inner.Description + " (with an injected fault)";

    public Task<HostCommandResult> RunAsync(string program, IReadOnlyList<string> arguments, string? standardInput,
        CancellationToken cancellationToken)
    {
        if (when(program, arguments, standardInput) && Interlocked.Exchange(ref _fired, 1) == 0)
            return Task.FromResult(fault(program + " " + string.Join(' ', arguments)));
        return inner.RunAsync(program, arguments, standardInput, cancellationToken);
    }
}
