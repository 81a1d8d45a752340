using BlockMigrate.Interop;
using Microsoft.Win32.SafeHandles;

namespace BlockMigrate.Engine;

/// <summary>What of an image holds data (SEEK_DATA/SEEK_HOLE), as the receiver will store it.</summary>
internal static class ImageExtents
{
    /// <summary>
    /// The data extents of the first <paramref name="size"/> bytes, ascending, as [Start, End): two calls
    /// per extent, whatever the size of the holes between them. A file system without SEEK_DATA reports
    /// the whole file as one extent (nothing is skipped that could hold data).
    /// </summary>
    public static IEnumerable<(long Start, long End)> DataExtents(SafeFileHandle image, long size)
    {
        for (long pos = 0; pos < size;)
        {
            var data = SparseFile.NextData(image, pos, size);
            if (data >= size) yield break;
            var hole = SparseFile.NextHole(image, data, size);
            if (hole <= data) hole = size; // never loop without progress
            yield return (data, hole);
            pos = hole;
        }
    }

    /// <summary>
    /// Bytes of the whole blocks that hold data (SEEK_DATA/SEEK_HOLE): a block lying wholly in a hole is
    /// sent as a zero range and takes no space at the destination; any other block is written whole.
    /// Sent in the offer (<see cref="Protocol.DiskOffer.Allocated"/>) for the receiver's free-space check.
    /// Null when the file system cannot say.
    /// </summary>
    public static ulong? AllocatedBlockBytes(SafeFileHandle image, ulong size, uint blockSize)
    {
        try
        {
            ulong blocks = 0, nextBlock = 0; // blocks counted, and the first block not counted yet
            long pos = 0, end = (long)size;
            while (pos < end)
            {
                var data = SparseFile.NextData(image, pos, end);
                if (data >= end) break;
                var hole = SparseFile.NextHole(image, data, end);
                if (hole <= data) hole = end; // never loop without progress
                var first = Math.Max((ulong)data / blockSize, nextBlock);
                var last = (ulong)(hole - 1) / blockSize;
                if (last >= first) blocks += last - first + 1;
                nextBlock = Math.Max(nextBlock, last + 1);
                pos = hole;
            }
            return Math.Min(blocks * blockSize, size);
        }
        catch (IOException)
        {
            return null;
        }
    }
}
