using BlockMigrate.Maps;
using Microsoft.Win32.SafeHandles;

namespace BlockMigrate.Engine;

/// <summary>
/// One disk at the source: its map, its image (read directly, not through NBD) and the bits that are
/// out: taken from the map and not yet acknowledged by the receiver. On abort those go back into the map.
/// </summary>
internal sealed class SourceDisk : IDisposable
{
    private readonly object _lock = new();
    private readonly ulong[] _outstanding; // guarded by _lock

    public SourceDisk(ushort index, DiskSpec spec)
    {
        Index = index;
        Spec = spec;
        if (!File.Exists(spec.MapPath)) throw new MigrationException($"disk {spec.Name}: dirty map {spec.MapPath} not found (is the shim serving it?)");
        Map = DirtyMap.Open(spec.MapPath);
        try
        {
            Image = File.OpenHandle(spec.ImagePath, FileMode.Open, FileAccess.Read);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Map.Dispose();
            throw new MigrationException($"disk {spec.Name}: cannot open image {spec.ImagePath}: {e.Message}");
        }
        var length = RandomAccess.GetLength(Image);
        if ((ulong)length != Map.ImageSize)
        {
            Dispose();
            throw new MigrationException($"disk {spec.Name}: image {spec.ImagePath} is {length} bytes but its map {spec.MapPath} covers {Map.ImageSize}; wrong map?");
        }
        _outstanding = new ulong[Map.Words];
    }

    public ushort Index { get; }
    public DiskSpec Spec { get; }
    public string Name => Spec.Name;
    public DirtyMap Map { get; }
    public SafeFileHandle Image { get; }
    public uint BlockSize => Map.BlockSize;
    public ulong Size => Map.ImageSize;
    public bool Frozen { get; set; }
    public ResumeCookie? Cookie { get; set; }

    /// <summary>Takes every dirty bit (atomically per word) and holds it as outstanding until acknowledged.</summary>
    public ulong[] Take(out ulong count)
    {
        lock (_lock)
        {
            var words = Map.TakeAll(out count);
            for (var i = 0; i < words.Length; i++) _outstanding[i] |= words[i];
            return words;
        }
    }

    /// <summary>The receiver has written blocks [first, first+count): they are no longer ours to give back.</summary>
    public void Acknowledge(ulong first, ulong count)
    {
        lock (_lock)
        {
            for (var b = first; b < first + count;)
            {
                var w = b / 64;
                var bit = (int)(b % 64);
                var span = (int)Math.Min(64 - (ulong)bit, first + count - b);
                var mask = span == 64 ? ulong.MaxValue : ((1ul << span) - 1) << bit;
                _outstanding[w] &= ~mask;
                b += (ulong)span;
            }
        }
    }

    /// <summary>Puts every outstanding bit back into the map (atomic OR); returns how many blocks went back.</summary>
    public ulong GiveBack()
    {
        lock (_lock)
        {
            ulong n = 0;
            foreach (var w in _outstanding) n += (ulong)System.Numerics.BitOperations.PopCount(w);
            if (n > 0) Map.MarkWords(0, _outstanding);
            Array.Clear(_outstanding);
            return n;
        }
    }

    /// <summary>After the commit: the destination owns everything.</summary>
    public void ForgetOutstanding()
    {
        lock (_lock) Array.Clear(_outstanding);
    }

    public void Dispose()
    {
        Image?.Dispose();
        Map.Dispose();
    }
}
