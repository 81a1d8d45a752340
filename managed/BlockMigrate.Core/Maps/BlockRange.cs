namespace BlockMigrate.Maps;

/// <summary>An inclusive run of block indices, <c>[First, Last]</c>.</summary>
public readonly record struct BlockRange(ulong First, ulong Last)
{
    public ulong Count => Last - First + 1;

    /// <summary>
    /// The runs of set bits in <paramref name="words"/>, whose first word is word
    /// <paramref name="firstWord"/> of a bitmap (bit b is bit b%64 of word b/64).
    /// </summary>
    public static List<BlockRange> FromBits(ReadOnlySpan<ulong> words, ulong firstWord = 0)
    {
        var ranges = new List<BlockRange>();
        AppendBits(ranges, words, firstWord);
        return ranges;
    }

    /// <summary>
    /// Appends the runs of set bits in <paramref name="words"/> (word <paramref name="firstWord"/> on) to
    /// <paramref name="ranges"/>, whose last range must end before them; a run that continues that last
    /// range extends it. So a bitmap read piece by piece, in ascending order, gives the same ranges as
    /// <see cref="FromBits"/> over the whole of it, without ever holding the whole of it.
    /// </summary>
    public static void AppendBits(List<BlockRange> ranges, ReadOnlySpan<ulong> words, ulong firstWord)
    {
        ulong start = 0, end = 0;
        var open = false;
        if (ranges.Count > 0 && ranges[^1].Last + 1 == firstWord * 64)
        {
            (start, end, open) = (ranges[^1].First, ranges[^1].Last, true);
            ranges.RemoveAt(ranges.Count - 1);
        }
        for (var i = 0; i < words.Length; i++)
        {
            var w = words[i];
            if (w == 0) continue;
            var baseBlock = (firstWord + (ulong)i) * 64;
            while (w != 0)
            {
                var bit = (ulong)System.Numerics.BitOperations.TrailingZeroCount(w);
                // the run of ones starting at this bit
                var shifted = w >> (int)bit;
                var len = shifted == ulong.MaxValue ? 64ul : (ulong)System.Numerics.BitOperations.TrailingZeroCount(~shifted);
                var first = baseBlock + bit;
                if (open && first == end + 1)
                    end = first + len - 1;
                else
                {
                    if (open) ranges.Add(new BlockRange(start, end));
                    (start, end, open) = (first, first + len - 1, true);
                }
                w = bit + len >= 64 ? 0 : w & ~((1ul << (int)(bit + len)) - 1);
            }
        }
        if (open) ranges.Add(new BlockRange(start, end));
    }
}
