using System.Threading.Channels;

namespace BlockMigrate.Hypervisors.Qemu;

/// <summary>
/// The events a <see cref="QmpClient"/> receives from the moment of <see cref="QmpClient.Subscribe"/>
/// on, in order. Subscribe before the command that causes the event, so it cannot be missed. When
/// the connection ends, waiting throws a <see cref="QmpException"/> of class Disconnected.
/// </summary>
public sealed class QmpEventSubscription : IDisposable
{
    private readonly Channel<QmpEvent> _channel = Channel.CreateUnbounded<QmpEvent>();
    private readonly Action<QmpEventSubscription> _unsubscribe;
    private readonly HashSet<string>? _names;

    internal QmpEventSubscription(IEnumerable<string>? names, Action<QmpEventSubscription> unsubscribe)
    {
        _names = names == null ? null : new HashSet<string>(names, StringComparer.Ordinal);
        _unsubscribe = unsubscribe;
    }

    public ChannelReader<QmpEvent> Reader => _channel.Reader;

    internal void Post(QmpEvent e)
    {
        if (_names == null || _names.Contains(e.Name))
            _channel.Writer.TryWrite(e);
    }

    internal void Complete(Exception? error) => _channel.Writer.TryComplete(error);

    /// <summary>The next event named <paramref name="name"/> that matches <paramref name="match"/>; others are skipped.</summary>
    public async Task<QmpEvent> WaitAsync(string name, Func<QmpEvent, bool>? match, CancellationToken cancellationToken)
    {
        while (true)
        {
            QmpEvent e;
            try
            {
                e = await _channel.Reader.ReadAsync(cancellationToken);
            }
            catch (ChannelClosedException closed)
            {
                var q = closed.InnerException as QmpException;
                throw new QmpException("wait for " + name, QmpException.DisconnectedClass,
                    q?.Description ?? "the QMP connection was closed", closed);
            }
            if (e.Name == name && (match == null || match(e)))
                return e;
        }
    }

    public void Dispose()
    {
        _unsubscribe(this);
        _channel.Writer.TryComplete();
    }
}
