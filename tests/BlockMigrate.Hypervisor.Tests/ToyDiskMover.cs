using System.Numerics;
using BlockMigrate.Maps;
using Microsoft.Win32.SafeHandles;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// A stand-in for the engine, just enough to put a real destination shim (gate mode) under a migrating
/// guest: it copies map blocks from the source image file to the destination image file on the same
/// machine, in the order the design prescribes: bulk copy, dirty rounds, and at switchover freeze, take
/// the final dirty set, gate exactly those blocks at the destination, lift the "gate everything" state
/// (the hand-over), then copy each remaining block and release it the moment it has landed. It does
/// not talk over a network, throttle or checksum: that is the engine's job, tested with the engine.
/// </summary>
internal sealed class ToyDiskMover(string sourceImage, DirtyMap sourceMap, string destinationImage, DirtyMap destinationMap)
{
    private readonly int _blockSize = (int)sourceMap.BlockSize;

    /// <summary>Clears the source map, then copies the whole image.</summary>
    public void BulkCopy()
    {
        sourceMap.TakeAll(out _);
        CopyBlocks(Enumerable.Range(0, (int)sourceMap.Blocks).Select(b => (ulong)b), release: false);
    }

    /// <summary>Takes the dirty set and copies it; returns how many blocks.</summary>
    public int CopyDirtyRound() => CopyBlocks(Blocks(sourceMap.TakeAll(out _)), release: false);

    /// <summary>
    /// The switchover callback's work. Returns at the hand-over (final set gated at the destination)
    /// with the final blocks still to copy: the returned task copies them, <paramref name="perBlock"/>
    /// apart, releasing each from the gate once written, and yields when the last one landed.
    /// </summary>
    public (int FinalBlocks, Task<DateTimeOffset> LastLanded) Switchover(TimeSpan perBlock)
    {
        sourceMap.Freeze(TimeSpan.FromSeconds(10));
        var words = sourceMap.TakeAll(out _);
        destinationMap.GateMarkWords(0, words);
        destinationMap.SetState(MapState.None, clear: MapState.GateAll);
        var final = Blocks(words).ToList();
        var landed = Task.Run(async () =>
        {
            foreach (var b in final)
            {
                await Task.Delay(perBlock);
                CopyBlocks([b], release: true);
            }
            return DateTimeOffset.UtcNow;
        });
        return (final.Count, landed);
    }

    private int CopyBlocks(IEnumerable<ulong> blocks, bool release)
    {
        using var src = File.OpenHandle(sourceImage, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        using var dst = File.OpenHandle(destinationImage, FileMode.Open, FileAccess.Write, FileShare.ReadWrite);
        var buffer = new byte[_blockSize];
        var n = 0;
        foreach (var b in blocks)
        {
            Copy(src, dst, buffer, (long)b * _blockSize);
            if (release)
                destinationMap.GateRelease(b, 1);
            n++;
        }
        return n;
    }

    private static void Copy(SafeFileHandle src, SafeFileHandle dst, byte[] buffer, long offset)
    {
        var read = RandomAccess.Read(src, buffer, offset);
        RandomAccess.Write(dst, buffer.AsSpan(0, read), offset);
    }

    private static IEnumerable<ulong> Blocks(ulong[] words)
    {
        for (var w = 0; w < words.Length; w++)
            for (var bits = words[w]; bits != 0; bits &= bits - 1)
                yield return (ulong)w * 64 + (ulong)BitOperations.TrailingZeroCount(bits);
    }
}
