using System.Numerics;

namespace BlockMigrate.Engine;

/// <summary>
/// The bits of a disk's blocks that are out (taken, not yet acknowledged), stored so that their memory
/// follows the blocks out, not the disk's size: the bitmap is cut in chunks of <see cref="ChunkWords"/>
/// words (4 KiB of bitmap: 128 MiB of disk at 4 KiB blocks); a chunk without a bit is not stored, a chunk with every bit
/// (the bulk copy of a whole disk) is one shared array never written, and only chunks with some bits
/// have their own. Each chunk's bit count is kept, so a chunk is dropped as soon as its last bit is
/// cleared. Not thread-safe: the owner (<see cref="SourceDisk"/>) guards it.
/// </summary>
internal sealed class OutstandingBits
{
    public const int ChunkWords = 512;
    private static readonly ulong[] Full = Enumerable.Repeat(ulong.MaxValue, ChunkWords).ToArray();

    private readonly ulong[]?[] _chunks;
    private readonly long[] _counts;

    public OutstandingBits(ulong words)
    {
        Words = words;
        var n = (int)((words + ChunkWords - 1) / ChunkWords);
        _chunks = new ulong[]?[n];
        _counts = new long[n];
    }

    /// <summary>Words of the whole bitmap.</summary>
    public ulong Words { get; }

    /// <summary>Chunks holding their own array (for tests: memory follows the bits).</summary>
    public int OwnChunks => _chunks.Count(c => c != null && !ReferenceEquals(c, Full));

    private int ChunkLength(int c) => (int)Math.Min(ChunkWords, Words - (ulong)c * ChunkWords);

    /// <summary>ORs <paramref name="bits"/> in, from word <paramref name="firstWord"/> on.</summary>
    public void Or(ulong firstWord, ReadOnlySpan<ulong> bits)
    {
        while (!bits.IsEmpty)
        {
            var c = (int)(firstWord / ChunkWords);
            var off = (int)(firstWord % ChunkWords);
            var n = Math.Min(bits.Length, ChunkLength(c) - off);
            var part = bits[..n];
            var chunk = _chunks[c];
            if (!ReferenceEquals(chunk, Full) && part.IndexOfAnyExcept(0ul) >= 0)
            {
                if (chunk == null && n == ChunkWords && part.IndexOfAnyExcept(ulong.MaxValue) < 0)
                {
                    _chunks[c] = Full;
                    _counts[c] = ChunkWords * 64L;
                }
                else
                {
                    chunk ??= _chunks[c] = new ulong[ChunkLength(c)];
                    long added = 0;
                    for (var i = 0; i < n; i++)
                    {
                        added += BitOperations.PopCount(part[i] & ~chunk[off + i]);
                        chunk[off + i] |= part[i];
                    }
                    _counts[c] += added;
                }
            }
            firstWord += (ulong)n;
            bits = bits[n..];
        }
    }

    /// <summary>Clears the bits of blocks [first, first+count) (clamped to the bitmap).</summary>
    public void Clear(ulong first, ulong count)
    {
        var end = Math.Min(first + count, Words * 64);
        for (var b = first; b < end;)
        {
            var c = (int)(b / 64 / ChunkWords);
            var chunkFirst = (ulong)c * ChunkWords * 64;
            var chunkEnd = chunkFirst + (ulong)ChunkLength(c) * 64;
            var e = Math.Min(end, chunkEnd);
            var chunk = _chunks[c];
            if (chunk != null)
            {
                if (b == chunkFirst && e == chunkEnd) Drop(c);
                else
                {
                    if (ReferenceEquals(chunk, Full)) chunk = _chunks[c] = (ulong[])Full.Clone();
                    long removed = 0;
                    for (var x = b - chunkFirst; x < e - chunkFirst;)
                    {
                        var w = (int)(x / 64);
                        var bit = (int)(x % 64);
                        var span = (int)Math.Min(64 - (ulong)bit, e - chunkFirst - x);
                        var mask = span == 64 ? ulong.MaxValue : ((1ul << span) - 1) << bit;
                        removed += BitOperations.PopCount(chunk[w] & mask);
                        chunk[w] &= ~mask;
                        x += (ulong)span;
                    }
                    _counts[c] -= removed;
                    if (_counts[c] == 0) Drop(c);
                }
            }
            b = e;
        }
    }

    private void Drop(int c)
    {
        _chunks[c] = null;
        _counts[c] = 0;
    }

    public void ClearAll()
    {
        Array.Clear(_chunks);
        Array.Clear(_counts);
    }

    public ulong Count()
    {
        long n = 0;
        foreach (var c in _counts) n += c;
        return (ulong)n;
    }

    /// <summary>Copies words [firstWord, firstWord + destination.Length) into <paramref name="destination"/>; false (and nothing copied) when none of them has a bit.</summary>
    public bool CopyTo(ulong firstWord, Span<ulong> destination)
    {
        var lastChunk = (int)((firstWord + (ulong)destination.Length - 1) / ChunkWords);
        var any = false;
        for (var c = (int)(firstWord / ChunkWords); c <= lastChunk && !any; c++) any = _chunks[c] != null;
        if (!any) return false;
        destination.Clear();
        while (!destination.IsEmpty)
        {
            var c = (int)(firstWord / ChunkWords);
            var off = (int)(firstWord % ChunkWords);
            var n = Math.Min(destination.Length, ChunkLength(c) - off);
            if (_chunks[c] is { } chunk) chunk.AsSpan(off, n).CopyTo(destination);
            firstWord += (ulong)n;
            destination = destination[n..];
        }
        return true;
    }

    /// <summary>The chunks holding bits, as (first word, words).</summary>
    public IEnumerable<(ulong FirstWord, ReadOnlyMemory<ulong> Words)> Chunks()
    {
        for (var c = 0; c < _chunks.Length; c++)
            if (_chunks[c] is { } chunk)
                yield return ((ulong)c * ChunkWords, chunk.AsMemory(0, ChunkLength(c)));
    }
}
