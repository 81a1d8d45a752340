namespace BlockMigrate.Receiver;

/// <summary>
/// The disks being received right now, across every session: a disk is received from one source at a
/// time. Every access is under the set's own lock (sessions add and remove concurrently).
/// </summary>
internal sealed class BusySet
{
    private readonly object _lock = new();
    private readonly HashSet<string> _names = [];

    /// <summary>Claims <paramref name="name"/>; false if another session holds it.</summary>
    public bool TryAdd(string name)
    {
        lock (_lock) return _names.Add(name);
    }

    public void Remove(string name)
    {
        lock (_lock) _names.Remove(name);
    }

    public int Count
    {
        get
        {
            lock (_lock) return _names.Count;
        }
    }
}
