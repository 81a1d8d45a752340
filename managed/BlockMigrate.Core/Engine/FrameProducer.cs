using System.Buffers;
using System.Threading.Channels;
using BlockMigrate.Interop;
using BlockMigrate.Maps;
using BlockMigrate.Protocol;

namespace BlockMigrate.Engine;

/// <summary>
/// The reading and compressing stage of the pipeline (reader → compressor → socket): turns taken bits
/// into block-aligned data frames. Per run of contiguous dirty blocks:
///  - SEEK_DATA/SEEK_HOLE find the holes of the image file; a block lying wholly in a hole is a zero
///    range and is not read (two calls per extent of the file, whatever its size);
///  - the other blocks are read, 1 MiB at a time; all-zero blocks become zero ranges too;
///  - adjacent zero ranges (holes and zero blocks) go out as one Zero frame, however long;
///  - runs of non-zero blocks are compressed with <see cref="Codec"/> (LZ4 or zstd) when that pays, else sent raw.
/// Every frame covers whole blocks (the image's last block may be short), so an acknowledgement of a
/// frame releases exactly its blocks, and the destination gate can release them.
/// </summary>
internal sealed class FrameProducer(DataEncoding codec)
{
    public long DataBytes;  // uncompressed bytes of data frames (Interlocked)
    public long ZeroBytes;  // bytes sent as zero ranges (Interlocked)
    private readonly long[] _codecBytes = new long[BlockCodec.All.Count]; // uncompressed bytes sent with each row of the codec table (Interlocked)
    private volatile int _codec = (int)codec;

    /// <summary>The codec of the frames produced from now on (Raw = no compression); the engine may change it at any time.</summary>
    public DataEncoding Codec
    {
        get => (DataEncoding)_codec;
        set => _codec = (int)value;
    }

    /// <summary>Data bytes (before compression) sent with each codec of the table so far, by its name; every row present.</summary>
    public IReadOnlyDictionary<string, long> CodecBytes() =>
        BlockCodec.All.Select((c, i) => (c.Name, Bytes: Interlocked.Read(ref _codecBytes[i]))).ToDictionary(x => x.Name, x => x.Bytes);

    public Task ProduceAsync(IEnumerable<(SourceDisk Disk, List<BlockRange> Taken)> work, ChannelWriter<OutgoingFrame> output,
        CancellationToken cancellationToken, bool deferDirtyAgain = false) =>
        ProduceAsync(work.Select(w => (w.Disk, (IEnumerable<BlockRange>)w.Taken)), output, cancellationToken, deferDirtyAgain);

    /// <summary>Blocks of a round not read because the guest had written them again since they were taken (Interlocked).</summary>
    public long DeferredBlocks;

    /// <summary>Their bytes (Interlocked).</summary>
    public long DeferredBytes;

    /// <summary>
    /// As <see cref="ProduceAsync(IEnumerable{ValueTuple{SourceDisk, List{BlockRange}}}, ChannelWriter{OutgoingFrame}, CancellationToken, bool)"/>, over ranges of blocks (ascending).
    /// With <paramref name="deferDirtyAgain"/> (the rounds before the switchover, while the guest writes), each
    /// chunk's blocks whose bit is set again in the map are not read: the guest wrote them since they were
    /// taken, so a later round sends them anyway (at the latest the final set, taken from the frozen map), and
    /// sending them now too is bytes the link carries twice. A hot region is thus sent once, when the throttle
    /// has slowed its writer, instead of in full every round. They leave the outstanding bits (the map holds
    /// them), counted in <see cref="DeferredBlocks"/>. Only a bit set in the map defers a block, and only the
    /// engine clears bits (its takes, one round at a time): nothing deferred can be lost.
    /// </summary>
    public async Task ProduceAsync(IEnumerable<(SourceDisk Disk, IEnumerable<BlockRange> Ranges)> work, ChannelWriter<OutgoingFrame> output,
        CancellationToken cancellationToken, bool deferDirtyAgain = false)
    {
        foreach (var (disk, ranges) in work)
        {
            (ulong First, ulong Count)? zeros = null; // a zero range not sent yet: the next one may continue it
            OutgoingFrame? flushed;
            foreach (var range in ranges)
                foreach (var (first, count, hole) in Runs(disk, range.First, range.Count))
                {
                    if (hole)
                    {
                        (zeros, flushed) = AddZero(disk, zeros, first, count);
                        if (flushed != null) await output.WriteAsync(flushed, cancellationToken);
                        continue;
                    }
                    var chunkBlocks = Math.Max(1ul, (ulong)DataHeader.MaxDataLength / disk.BlockSize);
                    for (var b = first; b < first + count; b += chunkBlocks)
                    {
                        cancellationToken.ThrowIfCancellationRequested();
                        var n = Math.Min(chunkBlocks, first + count - b);
                        foreach (var (runFirst, runCount) in deferDirtyAgain ? CleanRuns(disk, b, n) : [(b, n)])
                        foreach (var (zero, frame) in DataRun(disk, runFirst, runCount))
                        {
                            if (frame is null)
                            {
                                (zeros, flushed) = AddZero(disk, zeros, zero.First, zero.Count);
                                if (flushed != null) await output.WriteAsync(flushed, cancellationToken);
                                continue;
                            }
                            if (zeros is { } pending)
                            {
                                await output.WriteAsync(Zero(disk, pending.First, pending.Count), cancellationToken);
                                zeros = null;
                            }
                            await output.WriteAsync(frame, cancellationToken);
                        }
                    }
                }
            if (zeros is { } last) await output.WriteAsync(Zero(disk, last.First, last.Count), cancellationToken);
        }
    }

    /// <summary>
    /// The runs of [first, first+count) whose bits are clear in the map now; the blocks whose bits are set
    /// again are deferred (released from the outstanding bits, counted). One peek of the words that cover them.
    /// </summary>
    private List<(ulong First, ulong Count)> CleanRuns(SourceDisk disk, ulong first, ulong count)
    {
        var firstWord = first / 64;
        var n = (int)((first + count - 1) / 64 - firstWord + 1);
        Span<ulong> words = n <= 64 ? stackalloc ulong[n] : new ulong[n]; // a 1 MiB chunk: 4 words at 4 KiB blocks; no garbage per chunk
        disk.Map.Peek(firstWord, words);
        var runs = new List<(ulong, ulong)>();
        ulong? cleanFrom = null, dirtyFrom = null;
        for (var b = first; b <= first + count; b++)
        {
            var end = b == first + count;
            var dirty = !end && (words[(int)(b / 64 - firstWord)] >> (int)(b % 64) & 1) != 0;
            if ((end || dirty) && cleanFrom is { } c) { runs.Add((c, b - c)); cleanFrom = null; }
            if ((end || !dirty) && dirtyFrom is { } d) { Defer(disk, d, b - d); dirtyFrom = null; }
            if (end) break;
            if (dirty) dirtyFrom ??= b;
            else cleanFrom ??= b;
        }
        return runs;
    }

    private void Defer(SourceDisk disk, ulong first, ulong count)
    {
        disk.Acknowledge(first, count);
        Interlocked.Add(ref DeferredBlocks, (long)count);
        var (start, end) = Bytes(disk, first, count);
        Interlocked.Add(ref DeferredBytes, end - start);
    }

    /// <summary>
    /// Zero blocks [first, first+count) after the <paramref name="pending"/> zero range: one range when they
    /// continue it (a run of holes and zero blocks is one frame, however long), else the pending one goes out.
    /// </summary>
    private ((ulong First, ulong Count)? Pending, OutgoingFrame? Flushed) AddZero(SourceDisk disk, (ulong First, ulong Count)? pending, ulong first, ulong count) =>
        pending is { } p
            ? p.First + p.Count == first ? ((p.First, p.Count + count), null) : ((first, count), Zero(disk, p.First, p.Count))
            : ((first, count), null);

    /// <summary>Bytes of whole blocks hashed into seed-hashes frames (Interlocked).</summary>
    public long HashedBytes;

    /// <summary>Blocks sent as data frames with bytes (not zero ranges) (Interlocked).</summary>
    public long DataBlocks;

    /// <summary>
    /// The seeded first round's first half: like <see cref="ProduceAsync"/>, but every non-zero whole block
    /// is hashed (<see cref="BlockHash"/> under <paramref name="key"/>) into seed-hashes frames of up to
    /// <see cref="SeedHashes.MaxHashes"/> blocks (each also added to <paramref name="batches"/>) instead of
    /// being sent; holes and zero blocks go as zero ranges, and the image's short last block as data.
    /// </summary>
    public async Task ProduceHashesAsync(IEnumerable<(SourceDisk Disk, IEnumerable<BlockRange> Ranges)> work, byte[] key, List<SeedBatch> batches,
        ChannelWriter<OutgoingFrame> output, CancellationToken cancellationToken)
    {
        using var hasher = new BlockHash(key);
        foreach (var (disk, ranges) in work)
        {
            var batch = new SeedBatch(disk);
            var chunkBlocks = Math.Max(1ul, (ulong)DataHeader.MaxDataLength / disk.BlockSize);
            foreach (var range in ranges)
                for (var b = range.First; b <= range.Last; b += chunkBlocks)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    var n = Math.Min(chunkBlocks, range.Last - b + 1);
                    foreach (var frame in HashChunk(disk, b, n, hasher, ref batch, batches))
                        await output.WriteAsync(frame, cancellationToken);
                }
            if (batch.Count > 0) await output.WriteAsync(SeedFrame(batch, batches), cancellationToken);
        }
    }

    private static OutgoingFrame SeedFrame(SeedBatch batch, List<SeedBatch> batches)
    {
        lock (batches) batches.Add(batch);
        return new OutgoingFrame(default, batch.Encode(), null, batch.Disk, 0, 0) { Seeds = batch };
    }

    private List<OutgoingFrame> HashChunk(SourceDisk disk, ulong first, ulong count, BlockHash hasher, ref SeedBatch batch, List<SeedBatch> batches)
    {
        var frames = new List<OutgoingFrame>();
        var holes = HoleBlocks(disk, first, count);
        var whole = disk.Size / disk.BlockSize; // blocks below this are whole
        var bs = (int)disk.BlockSize;
        var (start, end) = Bytes(disk, first, count);
        var length = (int)(end - start);
        var buffer = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            ulong zeroFrom = 0, zeroCount = 0;
            void FlushZeros(List<OutgoingFrame> to)
            {
                if (zeroCount > 0) to.Add(Zero(disk, zeroFrom, zeroCount));
                zeroCount = 0;
            }
            var read = false;
            for (ulong i = 0; i < count; i++)
            {
                var block = first + i;
                if (holes[i])
                {
                    if (zeroCount == 0) zeroFrom = block;
                    zeroCount++;
                    continue;
                }
                if (!read)
                {
                    ReadFull(disk, buffer.AsSpan(0, length), start);
                    read = true;
                }
                var offset = (int)i * bs;
                var data = buffer.AsSpan(offset, Math.Min(bs, length - offset));
                if (data.IndexOfAnyExcept((byte)0) < 0)
                {
                    if (zeroCount == 0) zeroFrom = block;
                    zeroCount++;
                    continue;
                }
                FlushZeros(frames);
                if (block >= whole)
                {
                    frames.Add(Data(disk, block, 1, buffer.AsMemory(offset, data.Length), start + offset));
                    continue;
                }
                hasher.Compute(data, batch.Add(block));
                Interlocked.Add(ref HashedBytes, bs);
                if (batch.Full)
                {
                    frames.Add(SeedFrame(batch, batches));
                    batch = new SeedBatch(disk);
                }
            }
            FlushZeros(frames);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        return frames;
    }

    private static void ReadFull(SourceDisk disk, Span<byte> buffer, long start)
    {
        var got = 0;
        while (got < buffer.Length)
        {
            var n = RandomAccess.Read(disk.Image, buffer[got..], start + got);
            if (n == 0) throw new MigrationException($"disk {disk.Name}: image {disk.Spec.ImagePath} shrank while being read");
            got += n;
        }
    }

    /// <summary>Bytes of blocks [first, first+count), clipped to the image.</summary>
    private static (long Start, long End) Bytes(SourceDisk disk, ulong first, ulong count) =>
        ((long)(first * disk.BlockSize), (long)Math.Min((first + count) * disk.BlockSize, disk.Size));

    /// <summary>For each block of the chunk: does it lie wholly in a hole of the image file? (the seeded round's hashing)</summary>
    private static bool[] HoleBlocks(SourceDisk disk, ulong first, ulong count)
    {
        var holes = new bool[count];
        Array.Fill(holes, true);
        foreach (var (runFirst, runCount, hole) in Runs(disk, first, count))
            if (!hole)
                for (var b = runFirst; b < runFirst + runCount; b++) holes[b - first] = false;
        return holes;
    }

    /// <summary>
    /// Blocks [first, first+count) as runs that lie wholly in a hole of the image file (<c>hole</c>) and runs
    /// that hold some data, from SEEK_DATA/SEEK_HOLE: two calls per extent of the file, whatever the length
    /// of a hole, so a terabyte of holes costs as much as a kilobyte.
    /// </summary>
    internal static IEnumerable<(ulong First, ulong Count, bool Hole)> Runs(SourceDisk disk, ulong first, ulong count)
    {
        var bs = disk.BlockSize;
        var end = first + count;
        var endByte = Bytes(disk, first, count).End;
        var b = first;
        while (b < end)
        {
            var start = (long)(b * bs);
            var data = SparseFile.NextData(disk.Image, start, endByte);
            // blocks before the one holding `data` lie wholly in the hole (all of them when no data follows)
            var holeEnd = data >= endByte ? end : Math.Min(end, (ulong)data / bs);
            if (holeEnd > b)
            {
                yield return (b, holeEnd - b, true);
                b = holeEnd;
                if (b >= end) break;
                start = (long)(b * bs);
            }
            var hole = SparseFile.NextHole(disk.Image, Math.Max(start, data), endByte);
            if (hole <= start) hole = endByte; // defensive: never loop without progress
            // blocks up to the one holding the data's last byte
            var dataEnd = Math.Min(end, ((ulong)hole + bs - 1) / bs);
            if (dataEnd <= b) dataEnd = b + 1;
            yield return (b, dataEnd - b, false);
            b = dataEnd;
        }
    }

    private OutgoingFrame Zero(SourceDisk disk, ulong first, ulong count)
    {
        var (start, end) = Bytes(disk, first, count);
        Interlocked.Add(ref ZeroBytes, end - start);
        return new OutgoingFrame(new DataHeader(disk.Index, DataEncoding.Zero, (ulong)start, (ulong)(end - start)),
            ReadOnlyMemory<byte>.Empty, null, disk, first, count);
    }

    /// <summary>Reads blocks [first, first+count) (≤ 1 MiB): data frames, and the all-zero runs among them as ranges (frame null).</summary>
    private IEnumerable<((ulong First, ulong Count) Zero, OutgoingFrame? Frame)> DataRun(SourceDisk disk, ulong first, ulong count)
    {
        var (start, end) = Bytes(disk, first, count);
        var length = (int)(end - start);
        var buffer = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            var got = 0;
            while (got < length)
            {
                var n = RandomAccess.Read(disk.Image, buffer.AsSpan(got, length - got), start + got);
                if (n == 0) throw new MigrationException($"disk {disk.Name}: image {disk.Spec.ImagePath} shrank while being read");
                got += n;
            }
            // split into runs of all-zero and non-zero blocks
            var bs = (int)disk.BlockSize;
            ulong i = 0;
            while (i < count)
            {
                var zero = IsZero(buffer, (int)i * bs, length, bs);
                var j = i + 1;
                while (j < count && IsZero(buffer, (int)j * bs, length, bs) == zero) j++;
                if (zero) yield return ((first + i, j - i), null);
                else yield return (default, Data(disk, first + i, j - i, buffer.AsMemory((int)i * bs, Math.Min((int)j * bs, length) - (int)i * bs), start + (long)i * bs));
                i = j;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static bool IsZero(byte[] buffer, int offset, int length, int bs) =>
        buffer.AsSpan(offset, Math.Min(bs, length - offset)).IndexOfAnyExcept((byte)0) < 0;

    private OutgoingFrame Data(SourceDisk disk, ulong first, ulong count, ReadOnlyMemory<byte> data, long offset)
    {
        Interlocked.Add(ref DataBytes, data.Length);
        Interlocked.Add(ref DataBlocks, (long)count);
        var scratch = ArrayPool<byte>.Shared.Rent(BlockCodec.ScratchSize(data.Length));
        var (encoding, body) = BlockCodec.Encode(data, scratch, Codec);
        for (var i = 0; i < _codecBytes.Length; i++)
            if (BlockCodec.All[i].Encoding == encoding) Interlocked.Add(ref _codecBytes[i], data.Length);
        if (encoding == DataEncoding.Raw)
        {
            // the read buffer is reused for the next run: the frame keeps its own copy
            data.CopyTo(scratch);
            body = scratch.AsMemory(0, data.Length);
        }
        return new OutgoingFrame(new DataHeader(disk.Index, encoding, (ulong)offset, (ulong)data.Length), body, scratch, disk, first, count);
    }
}
