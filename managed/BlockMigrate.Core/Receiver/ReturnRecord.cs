using System.Security.Cryptography;
using BlockMigrate.Files;
using Microsoft.Win32.SafeHandles;

namespace BlockMigrate.Receiver;

/// <summary>
/// What a source records about its own image at the hand-over (in the state file beside it, status
/// "handed-away"), so that its receiver can later prove the image is untouched before keeping it as
/// the base of a return trip (docs/DESIGN.md, "The return trip"):
/// <list type="bullet">
/// <item>device, inode, size, ctime (ns) and mtime (ns) of the image file: every write through the file,
/// a truncate, a chmod or a rename-over changes the ctime, and no user can set a ctime back
/// (utimensat sets only atime and mtime; the kernel stamps ctime with the clock);</item>
/// <item>a keyed digest (HMAC-SHA-256, a random key per record) of a sample: the first and last block
/// and 30 blocks chosen by the key: a second, independent look at the content.</item>
/// </list>
/// Only regular files get a record: a block device's ctime does not change when it is written.
/// </summary>
public sealed record ReturnRecord(ulong Device, ulong Inode, ulong Size, long CtimeNs, long MtimeNs, string SampleKey, string Sample)
{
    private const int SampleBlocks = 32;

    /// <summary>The record of <paramref name="image"/> now; null (with <paramref name="why"/>) when it cannot have one.</summary>
    public static ReturnRecord? Take(SafeFileHandle image, string path, uint blockSize, out string? why)
    {
        var st = FileTrust.Stat(image, path);
        if (((uint)st.st_mode & 0xF000) != 0x8000)
        {
            why = "not a regular file (a block device's times do not show writes)";
            return null;
        }
        var key = RandomNumberGenerator.GetBytes(32);
        why = null;
        return new ReturnRecord((ulong)st.st_dev, (ulong)st.st_ino, (ulong)(long)st.st_size, Ns(st.st_ctim), Ns(st.st_mtim),
            Convert.ToHexString(key).ToLowerInvariant(), Digest(image, key, (ulong)(long)st.st_size, blockSize));
    }

    /// <summary>The owner of <paramref name="image"/> (uid, gid).</summary>
    public static (uint Uid, uint Gid) OwnerOf(SafeFileHandle image, string path)
    {
        var st = FileTrust.Stat(image, path);
        return ((uint)st.st_uid, (uint)st.st_gid);
    }

    /// <summary>Why <paramref name="image"/> is not what this record describes; null when it is.</summary>
    public string? Mismatch(SafeFileHandle image, string path, uint blockSize)
    {
        var st = FileTrust.Stat(image, path);
        if (((uint)st.st_mode & 0xF000) != 0x8000) return "the image is not a regular file";
        if ((ulong)st.st_dev != Device || (ulong)st.st_ino != Inode) return $"the image is another file (device {st.st_dev} inode {st.st_ino}, recorded {Device} {Inode})";
        if ((ulong)(long)st.st_size != Size) return $"the image's size changed ({(long)st.st_size} bytes, recorded {Size})";
        if (Ns(st.st_ctim) != CtimeNs || Ns(st.st_mtim) != MtimeNs) return "the image changed since the hand-over (its ctime/mtime moved: written, truncated or its metadata changed)";
        byte[] key;
        try
        {
            key = Convert.FromHexString(SampleKey ?? "");
        }
        catch (FormatException)
        {
            return "the record's sample key is malformed";
        }
        if (key.Length != 32) return "the record's sample key is malformed";
        var now = Digest(image, key, Size, blockSize);
        return CryptographicOperations.FixedTimeEquals(System.Text.Encoding.ASCII.GetBytes(now), System.Text.Encoding.ASCII.GetBytes(Sample ?? ""))
            ? null : "the image's sampled blocks differ from the hand-over's";
    }

    private static long Ns(Tmds.Linux.timespec t) => (long)t.tv_sec * 1_000_000_000 + (long)t.tv_nsec;

    /// <summary>HMAC(key, size ‖ for each sampled block: its index ‖ its bytes).</summary>
    internal static string Digest(SafeFileHandle image, byte[] key, ulong size, uint blockSize)
    {
        var blocks = Math.Max(1, (size + blockSize - 1) / blockSize);
        var picks = new SortedSet<ulong> { 0, blocks - 1 };
        var seed = HMACSHA256.HashData(key, "blockmigrate-return-sample-v1"u8);
        for (var i = 0; (ulong)picks.Count < Math.Min((ulong)SampleBlocks, blocks) && i < 4 * SampleBlocks; i++)
        {
            if (i % 4 == 0 && i > 0) seed = SHA256.HashData(seed);
            picks.Add(BitConverter.ToUInt64(seed, i % 4 * 8) % blocks);
        }
        using var mac = IncrementalHash.CreateHMAC(HashAlgorithmName.SHA256, key);
        mac.AppendData(BitConverter.GetBytes(size));
        var buffer = new byte[blockSize];
        foreach (var b in picks)
        {
            var n = RandomAccess.Read(image, buffer, (long)(b * blockSize));
            mac.AppendData(BitConverter.GetBytes(b));
            mac.AppendData(buffer, 0, n);
        }
        return Convert.ToHexString(mac.GetHashAndReset()).ToLowerInvariant();
    }
}
