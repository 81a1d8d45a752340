using BlockMigrate.Maps;

namespace BlockMigrate.Receiver;

/// <summary>
/// The destination gate of one disk, when a shim in gate mode already serves the image being received
/// (its map at GATE_DIR/NAME.map). On the final set: mark those blocks stale, then lift "everything
/// waits"; as each final block lands, release it; at the commit, release whatever is left.
/// <para>
/// If the link fails after the final set, the stale blocks stay held: the source may already have let
/// the destination VM run, and releasing them would show it old data. A re-run of the source finishes
/// them (<see cref="StillGated"/> says which blocks it may still write).
/// </para>
/// </summary>
internal sealed class GateLink(DirtyMap map) : IDisposable
{
    public static GateLink? Open(string gateDir, string name)
    {
        var path = Path.Combine(gateDir, name + ".map");
        return File.Exists(path) ? new GateLink(DirtyMap.Open(path)) : null;
    }

    /// <summary>Blocks the gate holds right now.</summary>
    public ulong Held => map.Info().GatedBlocks;

    public void MarkStale(IReadOnlyList<BlockRange> ranges)
    {
        var words = new ulong[map.Words];
        foreach (var r in ranges)
            for (var b = r.First; b <= r.Last && b < map.Blocks; b++)
                words[b / 64] |= 1ul << (int)(b % 64);
        map.GateMarkWords(0, words);
        map.SetState(MapState.Gate, MapState.GateAll);
    }

    public void Landed(ulong firstBlock, ulong blocks)
    {
        if (firstBlock < map.Blocks) map.GateRelease(firstBlock, Math.Min(blocks, map.Blocks - firstBlock));
    }

    /// <summary>The runs of blocks in [first, first+count) that the gate still holds, as (first, count).</summary>
    public List<(ulong First, ulong Count)> StillGated(ulong first, ulong count)
    {
        var runs = new List<(ulong, ulong)>();
        var end = Math.Min(first + count, map.Blocks);
        if (first >= end) return runs;
        var firstWord = first / 64;
        var words = new ulong[(end - 1) / 64 - firstWord + 1];
        map.GatePeek(firstWord, words);
        ulong? start = null;
        for (var b = first; b < end; b++)
        {
            var held = (words[b / 64 - firstWord] >> (int)(b % 64) & 1) != 0;
            if (held && start == null) start = b;
            if (!held && start is { } s)
            {
                runs.Add((s, b - s));
                start = null;
            }
        }
        if (start is { } last) runs.Add((last, end - last));
        return runs;
    }

    /// <summary>Releases every block and lifts the gate (commit; or a new copy replacing an old attempt).</summary>
    public void ReleaseAll()
    {
        map.GateRelease(0, map.Blocks);
        map.SetState(MapState.None, MapState.GateAll);
    }

    public void Dispose() => map.Dispose();
}
