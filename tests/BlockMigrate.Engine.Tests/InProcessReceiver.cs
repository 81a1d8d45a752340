using System.Collections.Concurrent;
using System.Net;
using BlockMigrate.Receiver;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// The receiver run inside the test process (<c>--once</c>; plaintext unless given keys: a plaintext source is never resumed), so that a test can give it its
/// own storage (<see cref="SimulatedDisk"/>); the source is the real <c>blockmigrate migrate</c>.
/// </summary>
internal sealed class InProcessReceiver : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentQueue<string> _log = new();

    private InProcessReceiver(string imageDir) => ImageDir = imageDir;

    public string ImageDir { get; }
    public int Port { get; private set; }
    public string Address => $"127.0.0.1:{Port}";
    public Task<int> Run { get; private set; } = null!;
    public string Log => string.Join("\n", _log);
    public string Image(string disk) => Path.Combine(ImageDir, disk + ".img");
    public string StateFile(string disk) => Path.Combine(ImageDir, disk + ".img.blockmigrate-state");

    public static async Task<InProcessReceiver> StartAsync(string imageDir, IReceiverStorage? storage = null, string? gateDir = null, bool overwrite = false, KeyPair? keys = null,
        IReadOnlyList<string>? seeds = null, Action? seedsIndexed = null)
    {
        Directory.CreateDirectory(imageDir);
        var r = new InProcessReceiver(imageDir);
        var listening = new TaskCompletionSource<IPEndPoint>(TaskCreationOptions.RunContinuationsAsynchronously);
        var receiver = new ReceiverServer(new ReceiverOptions
        {
            ImageDir = imageDir,
            Listen = new IPEndPoint(IPAddress.Loopback, 0),
            Plaintext = keys == null,
            KeyPath = keys?.ReceiverKey,
            TrustedPath = keys?.Trusted,
            Once = true,
            GateMapDir = gateDir ?? Path.Combine(imageDir, "no-gates"),
            Overwrite = overwrite,
            Storage = storage,
            IdleTimeout = TimeSpan.FromSeconds(60),
            Seeds = seeds ?? [],
            SeedsIndexed = seedsIndexed,
        }, new LineLogger(r._log));
        receiver.Listening += ep => listening.TrySetResult(ep);
        r.Run = Task.Run(() => receiver.RunAsync(r._stop.Token));
        var done = await Task.WhenAny(listening.Task, r.Run, Task.Delay(TimeSpan.FromSeconds(30)));
        if (done != listening.Task)
        {
            await r.DisposeAsync();
            Assert.Fail($"the receiver did not listen: {(r.Run.IsFaulted ? r.Run.Exception!.InnerException!.Message : "timeout")}");
        }
        r.Port = listening.Task.Result.Port;
        return r;
    }

    /// <summary>The receiver's exit code (0: committed), waiting at most <paramref name="timeout"/>.</summary>
    public async Task<int> ExitCodeAsync(TimeSpan timeout)
    {
        await Run.WaitAsync(timeout);
        return Run.Result;
    }

    /// <summary>The state file's status, or null if there is none.</summary>
    public string? Status(string disk) =>
        File.Exists(StateFile(disk)) ? System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(StateFile(disk))).RootElement.GetProperty("status").GetString() : null;

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        try
        {
            await Run.WaitAsync(TimeSpan.FromSeconds(30));
        }
        catch (Exception) { /* cancelled, or already reported */ }
        _stop.Dispose();
    }
}

/// <summary>Collects a library's log lines as text, warnings prefixed "warning: " as the CLI shows them.</summary>
public sealed class LineLogger(ConcurrentQueue<string> lines) : Microsoft.Extensions.Logging.ILogger
{
    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => logLevel >= Microsoft.Extensions.Logging.LogLevel.Information;

    public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception,
        Func<TState, Exception?, string> formatter)
    {
        if (!IsEnabled(logLevel)) return;
        lines.Enqueue((logLevel >= Microsoft.Extensions.Logging.LogLevel.Warning ? "warning: " : "") + formatter(state, exception));
    }
}
