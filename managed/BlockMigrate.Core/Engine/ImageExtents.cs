using BlockMigrate.Interop;
using Microsoft.Win32.SafeHandles;

namespace BlockMigrate.Engine;

/// <summary>What of a source image holds data, as the receiver will store it.</summary>
internal static class ImageExtents
{
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
