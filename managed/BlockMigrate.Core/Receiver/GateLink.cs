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

    /// <summary>
    /// Gates the blocks of <paramref name="ranges"/> (clamped to the map), then lifts "everything waits".
    /// Word-wise, through a window of at most 64 KiB of bitmap: whole words are filled at once and only
    /// the words the ranges touch are passed to the map, so the cost is one pass over those words plus one
    /// step per range, whatever the ranges' sizes, and no array the size of the disk's bitmap is made.
    /// </summary>
    public void MarkStale(IReadOnlyList<BlockRange> ranges)
    {
        var blocks = map.Blocks;
        ulong[]? window = null;
        ulong windowWord = 0;
        var used = 0; // words of the window set so far
        foreach (var r in ranges)
        {
            if (r.First >= blocks || r.Last < r.First) continue;
            var last = Math.Min(r.Last, blocks - 1);
            for (var b = r.First; b <= last;)
            {
                var word = b / 64;
                if (window == null || word < windowWord || word >= windowWord + WindowWords)
                {
                    if (window != null && used > 0) map.GateMarkWords(windowWord, window.AsSpan(0, used));
                    window ??= new ulong[WindowWords];
                    Array.Clear(window);
                    windowWord = word;
                    used = 0;
                }
                var l = Math.Min(last, (windowWord + WindowWords) * 64 - 1);
                SetBits(window, b - windowWord * 64, l - windowWord * 64);
                used = Math.Max(used, (int)(l / 64 - windowWord) + 1);
                b = l + 1;
            }
        }
        if (window != null && used > 0) map.GateMarkWords(windowWord, window.AsSpan(0, used));
        map.SetState(MapState.Gate, MapState.GateAll);
    }

    /// <summary>Sets bits [first, last] of <paramref name="words"/>: the partial words at the ends, whole words between.</summary>
    internal static void SetBits(Span<ulong> words, ulong first, ulong last)
    {
        var fw = (int)(first / 64);
        var lw = (int)(last / 64);
        var head = ~0ul << (int)(first % 64);
        var tail = ~0ul >> (63 - (int)(last % 64));
        if (fw == lw)
        {
            words[fw] |= head & tail;
            return;
        }
        words[fw] |= head;
        words[(fw + 1)..lw].Fill(~0ul);
        words[lw] |= tail;
    }

    public void Landed(ulong firstBlock, ulong blocks)
    {
        if (firstBlock < map.Blocks) map.GateRelease(firstBlock, Math.Min(blocks, map.Blocks - firstBlock));
    }

    /// <summary>
    /// The runs of blocks in [first, first+count) that the gate still holds, as (first, count). The gate
    /// is read a window of words at a time and words without a held block are skipped whole, so a zero
    /// range over a terabyte costs a pass over its words and no array of their size.
    /// </summary>
    public List<(ulong First, ulong Count)> StillGated(ulong first, ulong count)
    {
        var runs = new List<(ulong, ulong)>();
        var end = Math.Min(first + count, map.Blocks);
        if (first >= end) return runs;
        var words = new ulong[Math.Min(WindowWords, (end - 1) / 64 - first / 64 + 1)];
        ulong? start = null;
        for (var w0 = first / 64; w0 * 64 < end; w0 += (ulong)words.Length)
        {
            var n = (int)Math.Min((ulong)words.Length, (end - 1) / 64 - w0 + 1);
            map.GatePeek(w0, words.AsSpan(0, n));
            for (var i = 0; i < n; i++)
            {
                var w = words[i];
                var wordFirst = (w0 + (ulong)i) * 64;
                // bits of this word inside [first, end)
                if (wordFirst < first) w &= ~0ul << (int)(first - wordFirst);
                if (wordFirst + 64 > end) w &= ~0ul >> (int)(wordFirst + 64 - end);
                if (w == (start == null ? 0ul : ~0ul)) continue; // nothing changes in this word: none held, or all held with a run open
                for (var bit = 0; bit < 64; bit++)
                {
                    var b = wordFirst + (ulong)bit;
                    if (b < first || b >= end) continue;
                    var held = (w >> bit & 1) != 0;
                    if (held && start == null) start = b;
                    if (!held && start is { } s)
                    {
                        runs.Add((s, b - s));
                        start = null;
                    }
                }
            }
        }
        if (start is { } last) runs.Add((last, end - last));
        return runs;
    }

    private const int WindowWords = 8192; // 64 KiB of gate bitmap at a time

    /// <summary>Releases every block and lifts the gate (commit; or a new copy replacing an old attempt).</summary>
    public void ReleaseAll()
    {
        map.GateRelease(0, map.Blocks);
        map.SetState(MapState.None, MapState.GateAll);
    }

    /// <summary>
    /// The return trip: clears the map's dirty bits (taken and dropped) just before the destination VM
    /// may first run on the image (the final set in gate mode, the commit otherwise), so that from then on
    /// they are exactly the blocks it writes after the hand-over.
    /// </summary>
    public void ClearWritten() => map.TakeAll(out _);

    /// <summary>At the commit: the map's bits are relative to generation <paramref name="generation"/> of <paramref name="diskLineage"/> (<see cref="Engine.CookieState.Returnable"/>).</summary>
    public void MarkReturnable(string diskLineage, ulong generation) =>
        map.SetCookie(Engine.ResumeCookie.Returnable(diskLineage, generation).Encode());

    public void Dispose() => map.Dispose();
}
