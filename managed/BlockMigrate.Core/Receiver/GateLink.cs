using BlockMigrate.Maps;

namespace BlockMigrate.Receiver;

/// <summary>
/// The destination gate of one disk, when a shim in gate mode already serves the image being received
/// (its map at GATE_DIR/NAME.map). On the final set: mark those blocks stale, then lift "everything
/// waits"; as each final block lands, release it; at the commit, release whatever is left.
/// </summary>
internal sealed class GateLink(DirtyMap map) : IDisposable
{
    private readonly List<BlockRange> _stale = [];

    public static GateLink? Open(string gateDir, string name)
    {
        var path = Path.Combine(gateDir, name + ".map");
        return File.Exists(path) ? new GateLink(DirtyMap.Open(path)) : null;
    }

    public void MarkStale(IReadOnlyList<BlockRange> ranges)
    {
        var words = new ulong[map.Words];
        foreach (var r in ranges)
            for (var b = r.First; b <= r.Last && b < map.Blocks; b++)
                words[b / 64] |= 1ul << (int)(b % 64);
        map.GateMarkWords(0, words);
        map.SetState(MapState.Gate, MapState.GateAll);
        _stale.AddRange(ranges);
    }

    public void Landed(ulong firstBlock, ulong blocks)
    {
        if (_stale.Count > 0) map.GateRelease(firstBlock, Math.Min(blocks, map.Blocks - firstBlock));
    }

    public void ReleaseAll()
    {
        foreach (var r in _stale) map.GateRelease(r.First, Math.Min(r.Count, map.Blocks - r.First));
        _stale.Clear();
        map.SetState(MapState.None, MapState.GateAll);
    }

    public void Dispose() => map.Dispose();
}
