using MsLogging = Microsoft.Extensions.Logging;

namespace BlockMigrate.Cli.Logging;

/// <summary>
/// Routes Microsoft.Extensions.Logging lines (the engine's, the receiver's, the redirectors') to an NLog
/// logger, level for level: the CLI's one logging back end (LogSetup.cs) for the libraries' one logging
/// interface. No reflection: safe under NativeAOT. <paramref name="write"/>, when given, does the write
/// itself (the progress display clears its line first); otherwise the line goes to <paramref name="target"/>.
/// </summary>
public sealed class NLogLogger(NLog.Logger target, Action<NLog.LogLevel, string>? write = null) : MsLogging.ILogger
{
    public static NLog.LogLevel Map(MsLogging.LogLevel level) => level switch
    {
        MsLogging.LogLevel.Trace => NLog.LogLevel.Trace,
        MsLogging.LogLevel.Debug => NLog.LogLevel.Debug,
        MsLogging.LogLevel.Information => NLog.LogLevel.Info,
        MsLogging.LogLevel.Warning => NLog.LogLevel.Warn,
        MsLogging.LogLevel.Error => NLog.LogLevel.Error,
        MsLogging.LogLevel.Critical => NLog.LogLevel.Fatal,
        _ => NLog.LogLevel.Off,
    };

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(MsLogging.LogLevel logLevel) => logLevel != MsLogging.LogLevel.None && target.IsEnabled(Map(logLevel));

    public void Log<TState>(MsLogging.LogLevel logLevel, MsLogging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (!IsEnabled(logLevel)) return;
        var level = Map(logLevel);
        var line = formatter(state, exception);
        if (write != null) write(level, line);
        else target.Log(level, line);
    }
}

/// <summary>Hands out an <see cref="NLogLogger"/> per category name (NLog's logger of that name).</summary>
public sealed class NLogLoggerFactory : MsLogging.ILoggerFactory
{
    public MsLogging.ILogger CreateLogger(string categoryName) => new NLogLogger(NLog.LogManager.GetLogger(categoryName));

    public void AddProvider(MsLogging.ILoggerProvider provider) => throw new NotSupportedException("NLog is the only provider");

    public void Dispose() { }
}
