using System.Buffers;
using System.Threading.Channels;
using BlockMigrate.Interop;
using BlockMigrate.Maps;
using BlockMigrate.Protocol;

namespace BlockMigrate.Engine;

/// <summary>
/// The reading and compressing stage of the pipeline (reader → compressor → socket): turns taken bits
/// into block-aligned data frames. Per chunk of at most 1 MiB of contiguous dirty blocks:
///  - SEEK_DATA/SEEK_HOLE find the holes of the image file; a block lying wholly in a hole is a zero
///    range and is not read;
///  - the other blocks are read; all-zero blocks become zero ranges too;
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

    public Task ProduceAsync(IEnumerable<(SourceDisk Disk, ulong[] Taken)> work, ChannelWriter<OutgoingFrame> output,
        CancellationToken cancellationToken) =>
        ProduceAsync(work.Select(w => (w.Disk, (IEnumerable<BlockRange>)BlockRange.FromBits(w.Taken))), output, cancellationToken);

    /// <summary>As <see cref="ProduceAsync(IEnumerable{ValueTuple{SourceDisk, ulong[]}}, ChannelWriter{OutgoingFrame}, CancellationToken)"/>, over ranges of blocks (ascending).</summary>
    public async Task ProduceAsync(IEnumerable<(SourceDisk Disk, IEnumerable<BlockRange> Ranges)> work, ChannelWriter<OutgoingFrame> output,
        CancellationToken cancellationToken)
    {
        foreach (var (disk, ranges) in work)
        {
            var chunkBlocks = Math.Max(1ul, (ulong)DataHeader.MaxDataLength / disk.BlockSize);
            foreach (var range in ranges)
                for (var b = range.First; b <= range.Last; b += chunkBlocks)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    var n = Math.Min(chunkBlocks, range.Last - b + 1);
                    foreach (var frame in Chunk(disk, b, n))
                        await output.WriteAsync(frame, cancellationToken);
                }
        }
    }

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

    private IEnumerable<OutgoingFrame> Chunk(SourceDisk disk, ulong first, ulong count)
    {
        var holes = HoleBlocks(disk, first, count);
        ulong i = 0;
        while (i < count)
        {
            var j = i;
            while (j < count && holes[j] == holes[i]) j++;
            if (holes[i]) yield return Zero(disk, first + i, j - i);
            else foreach (var f in DataRun(disk, first + i, j - i)) yield return f;
            i = j;
        }
    }

    /// <summary>For each block of the chunk: does it lie wholly in a hole of the image file?</summary>
    private static bool[] HoleBlocks(SourceDisk disk, ulong first, ulong count)
    {
        var holes = new bool[count];
        var (start, end) = Bytes(disk, first, count);
        Array.Fill(holes, true);
        var pos = start;
        while (pos < end)
        {
            var data = SparseFile.NextData(disk.Image, pos, end);
            if (data >= end) break;
            var hole = SparseFile.NextHole(disk.Image, data, end);
            if (hole <= data) hole = end; // defensive: never loop without progress
            var b0 = (ulong)(data / disk.BlockSize) - first;
            var b1 = (ulong)((hole - 1) / disk.BlockSize) - first;
            for (var b = b0; b <= b1 && b < count; b++) holes[b] = false;
            pos = hole;
        }
        return holes;
    }

    private OutgoingFrame Zero(SourceDisk disk, ulong first, ulong count)
    {
        var (start, end) = Bytes(disk, first, count);
        Interlocked.Add(ref ZeroBytes, end - start);
        return new OutgoingFrame(new DataHeader(disk.Index, DataEncoding.Zero, (ulong)start, (ulong)(end - start)),
            ReadOnlyMemory<byte>.Empty, null, disk, first, count);
    }

    private IEnumerable<OutgoingFrame> DataRun(SourceDisk disk, ulong first, ulong count)
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
                if (zero) yield return Zero(disk, first + i, j - i);
                else yield return Data(disk, first + i, j - i, buffer.AsMemory((int)i * bs, Math.Min((int)j * bs, length) - (int)i * bs), start + (long)i * bs);
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
