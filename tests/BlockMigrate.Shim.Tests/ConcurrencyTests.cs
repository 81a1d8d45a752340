using System.Security.Cryptography;
using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Shim.Tests;

/// <summary>
/// No write is ever lost: parallel writers hammer the export (several connections, many requests in
/// flight) while this side takes-and-clears the map and copies what it took to a mirror, exactly as a
/// pre-copy does. After the writers stop and a last take, the mirror equals the image byte for byte.
/// </summary>
[CancelAfter(300_000)]
public class ConcurrencyTests
{
    private const long ImageSize = 48L << 20;

    private const string RandomWriter = """
        import os, random, time
        size = h.get_size()
        end = time.time() + {0}
        rnd = random.Random({1})
        while time.time() < end:
            n = rnd.choice([1, 512, 4096, 65535, 65536, 65537, 200000])
            off = rnd.randrange(0, size - n)
            if rnd.random() < 0.1:
                h.zero(n, off)
            else:
                h.pwrite(os.urandom(n), off)
        """;

    /// <summary>
    /// With <paramref name="writeDelay"/>, nbdkit's delay filter beneath ours keeps every write in flight
    /// for that long, which widens any window between "marked" and "on the backing store" far enough
    /// that a shim marking too early is caught on every run, not by luck.
    /// </summary>
    [TestCase(null), TestCase("4ms"), Repeat(2)]
    public async Task No_write_is_lost_while_the_map_is_taken_and_copied(string? writeDelay)
    {
        using var shim = writeDelay == null
            ? ShimHarness.Start(ImageSize)
            : ShimHarness.Start(ImageSize, innerFilters: ["delay"], extra: ["delay-write=" + writeDelay, "delay-zero=" + writeDelay]);
        var mirror = shim.Dir["mirror.img"];
        var source = shim.Dir["random.bin"];
        await File.WriteAllBytesAsync(source, RandomNumberGenerator.GetBytes(16 << 20));

        var seconds = 4;
        var writers = new List<Task>();
        for (var i = 0; i < 3; i++)
            writers.Add(Tool.CheckAsync("nbdsh", ["-u", shim.Uri, "-c", string.Format(RandomWriter, seconds, i + Environment.TickCount)]));
        // a multi-connection, many-requests-in-flight writer of its own
        writers.Add(Tool.CheckAsync("nbdcopy", ["--connections=4", "--requests=16", source, shim.Uri]));

        // tracking starts, then the bulk copy of everything, then rounds until the writers stop
        shim.Map.TakeAll(out _);
        File.Copy(shim.Image, mirror, overwrite: true);
        var rounds = 0;
        ulong copied = 0;
        var all = Task.WhenAll(writers);
        while (!all.IsCompleted)
        {
            copied += CopyTaken(shim.Map, shim.Image, mirror);
            rounds++;
            await Task.Delay(5);
        }
        await all;
        copied += CopyTaken(shim.Map, shim.Image, mirror);

        TestContext.Out.WriteLine($"{rounds} rounds, {copied} blocks copied, {shim.Map.Info().Writes} writes");
        Assert.That(rounds, Is.GreaterThan(10), "the copy loop must run while the writers write");
        Assert.That(Hash(mirror), Is.EqualTo(Hash(shim.Image)), "mirror differs from the image: a write was lost");
    }

    /// <summary>One dirty round: take the map, copy the blocks taken from the image to the mirror.</summary>
    private static ulong CopyTaken(DirtyMap map, string image, string mirror)
    {
        var words = map.TakeAll(out var count);
        if (count == 0) return 0;
        using var src = File.OpenHandle(image, FileMode.Open, FileAccess.Read);
        using var dst = File.OpenHandle(mirror, FileMode.Open, FileAccess.Write);
        var buffer = new byte[map.BlockSize];
        foreach (var r in BlockRange.FromBits(words))
            for (var b = r.First; b <= r.Last; b++)
            {
                var offset = (long)(b * map.BlockSize);
                var n = RandomAccess.Read(src, buffer, offset);
                RandomAccess.Write(dst, buffer.AsSpan(0, n), offset);
            }
        return count;
    }

    private static string Hash(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(f));
    }
}
