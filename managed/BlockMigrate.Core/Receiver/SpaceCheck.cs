using System.Text;
using BlockMigrate.Protocol;
using Microsoft.Win32.SafeHandles;
using Tmds.Linux;
using static Tmds.Linux.LibC;
using BlockMigrate.Logging;
using Microsoft.Extensions.Logging;

namespace BlockMigrate.Receiver;

/// <summary>
/// The free-space check at the offer. Disks are sparse (a 1 TiB disk holding 256 MiB of data is
/// normal), so the size says nothing about what a copy needs; the source says it instead:
/// <see cref="DiskOffer.Allocated"/>, the bytes of whole blocks its image holds data in (holes are sent
/// as zero ranges, which take no space here). The offers are refused when their allocated bytes,
/// added up, exceed the image directory's free space (statvfs: what an unprivileged writer may use)
/// plus what the disks' existing images already hold (a fresh copy truncates them, a resume reuses
/// them). A disk larger than the whole file system only gets a warning: it fits while it stays sparse.
/// An offer without <c>Allocated</c> (an older source) is not checked; running out of space during the
/// copy is still a clean "disk full" error, nothing acknowledged is lost.
/// </summary>
internal static class SpaceCheck
{
    public readonly record struct FileSystem(ulong Free, ulong Total);

    public static void Check(SafeFileHandle dir, string imageDir, IReadOnlyList<DiskOffer> offers, ILogger log)
    {
        var fs = Of(dir, imageDir);
        ulong needed = 0, held = 0;
        var checkedAny = false;
        foreach (var offer in offers)
        {
            if (offer.Size > fs.Total)
                log.Warning($"disk {offer.Name} is {offer.Size} bytes, larger than the file system of {imageDir} ({fs.Total} bytes): it fits only while it stays sparse");
            if (offer.Allocated is not { } allocated) continue;
            checkedAny = true;
            needed = Add(needed, Math.Min(allocated, offer.Size)); // 64 hostile sizes must not wrap around
            held = Add(held, AllocatedBytes(dir, DiskName.ImageFile(offer.Name)));
        }
        if (checkedAny && needed > Add(fs.Free, held))
            throw new ReceiverException($"not enough space in {imageDir}: the source's data takes {Units(needed)} ({needed} bytes), " +
                                        $"{Units(fs.Free)} are free{(held > 0 ? $" and {Units(held)} held by the earlier images" : "")}");
    }

    public static unsafe FileSystem Of(SafeFileHandle dir, string imageDir)
    {
        statvfs st;
        var added = false;
        dir.DangerousAddRef(ref added);
        try
        {
            if (fstatvfs((int)dir.DangerousGetHandle(), &st) != 0)
                throw new ReceiverException($"cannot see the free space of {imageDir}: statvfs failed (errno {errno})");
        }
        finally
        {
            if (added) dir.DangerousRelease();
        }
        return new FileSystem((ulong)st.f_bavail * (ulong)st.f_frsize, (ulong)st.f_blocks * (ulong)st.f_frsize);
    }

    /// <summary>Bytes allocated to a file of the directory (not following a symlink); 0 if there is none.</summary>
    public static unsafe ulong AllocatedBytes(SafeFileHandle dir, string name)
    {
        stat st;
        var path = Encoding.UTF8.GetBytes(name + "\0");
        var added = false;
        dir.DangerousAddRef(ref added);
        try
        {
            fixed (byte* p = path)
                if (fstatat((int)dir.DangerousGetHandle(), p, &st, AT_SYMLINK_NOFOLLOW) != 0) return 0;
        }
        finally
        {
            if (added) dir.DangerousRelease();
        }
        return (st.st_mode & S_IFMT) == S_IFREG ? (ulong)(long)st.st_blocks * 512 : 0;
    }

    private static ulong Add(ulong a, ulong b) => a + b < a ? ulong.MaxValue : a + b;

    private static string Units(ulong bytes) =>
        bytes >= 1ul << 30 ? $"{bytes / (double)(1ul << 30):0.#} GiB" : $"{bytes / (double)(1ul << 20):0.#} MiB";
}
