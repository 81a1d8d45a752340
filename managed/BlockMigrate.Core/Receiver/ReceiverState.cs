using System.Text.Json;
using System.Text.Json.Serialization;
using BlockMigrate.Interop;
using Microsoft.Win32.SafeHandles;

namespace BlockMigrate.Receiver;

/// <summary>
/// The small file beside each received image (NAME.img.blockmigrate-state) saying what the image is:
/// <list type="bullet">
/// <item>"preparing" — a fresh copy of lineage L is being set up (the image truncated): no base for anything.</item>
/// <item>"partial" — a consistent base of lineage L: every block the source saw acknowledged is in it
/// (acks promise fsynced data), so a source whose map is relative to L may resume; nobody runs on it.</item>
/// <item>"handed-over" — the final set of a gated disk arrived (recorded before it was acknowledged):
/// the source may have let the destination VM run on this image. Only the same source finishing
/// lineage L (<c>Finish</c>) or resuming it may touch it; a fresh copy is refused.</item>
/// <item>"committed" — a finished migration that the destination now owns: never overwritten.</item>
/// <item>"handed-away" — written by a <em>source</em> beside its own image after the commit: the VM now
/// runs elsewhere and this image is the hand-over state of generation <c>Generation</c> of
/// <c>DiskLineage</c>, described by <c>Return</c> (<see cref="ReturnRecord"/>). A return trip of that
/// lineage and generation may keep it as its base; any other offer may overwrite it (it is stale).</item>
/// </list>
/// <c>DiskLineage</c> and <c>Generation</c> (the return trip): recorded from the offer when a copy begins,
/// kept through resumes, and in the "committed" state they say which hand-over the image holds.
/// Each change is written to a temporary file, fsynced, renamed over the state file, and the directory
/// fsynced. A fresh copy over a handed-over, committed, gated or foreign image needs
/// <see cref="ReceiverOptions.Overwrite"/>.
/// </summary>
public sealed record ReceiverState(string Lineage, string Status, ulong Size, uint BlockSize, string Source, string Updated,
    string? DiskLineage = null, ulong Generation = 0, ReturnRecord? Return = null)
{
    public const string Preparing = "preparing", Partial = "partial", HandedOver = "handed-over", Committed = "committed",
        HandedAway = "handed-away";

    /// <summary>The state file beside the image of disk <paramref name="name"/>; null if absent or unreadable.</summary>
    public static ReceiverState? Load(SafeFileHandle dir, string imageDir, string name) => LoadFile(dir, imageDir, DiskName.StateFile(name));

    /// <summary>The state file <paramref name="file"/> in the directory <paramref name="dir"/>; null if absent or unreadable.</summary>
    public static ReceiverState? LoadFile(SafeFileHandle dir, string imageDir, string file)
    {
        var path = Path.Combine(imageDir, file);
        if (!File.Exists(path)) return null;
        try
        {
            using var fd = SparseFile.OpenInDirectory(dir, file, create: false);
            var bytes = new byte[RandomAccess.GetLength(fd)];
            RandomAccess.Read(fd, bytes, 0);
            return JsonSerializer.Deserialize(bytes, ReceiverJson.Default.ReceiverState);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>Writes NAME.state.tmp (no symlink followed), fsyncs it, renames it over the state file.</summary>
    internal void Save(IReceiverStorage storage, SafeFileHandle dir, string imageDir, string name) =>
        SaveFile(storage, dir, imageDir, DiskName.StateFile(name));

    /// <summary>
    /// The source's side: the state file beside <paramref name="imagePath"/> (IMAGE.blockmigrate-state), written the
    /// same way, and owned by <paramref name="owner"/> (the image's owner: the receiver, user blockmigrate, must read
    /// it; only root can give it away).
    /// </summary>
    public void SaveBeside(string imagePath, (uint Uid, uint Gid)? owner = null)
    {
        var imageDir = Path.GetDirectoryName(Path.GetFullPath(imagePath))!;
        using var dir = SparseFile.OpenDirectory(imageDir);
        SaveFile(PosixStorage.Instance, dir, imageDir, Path.GetFileName(imagePath) + StateSuffix, owner);
    }

    /// <summary>The state file beside <paramref name="imagePath"/>, if any.</summary>
    public static ReceiverState? LoadBeside(string imagePath)
    {
        var imageDir = Path.GetDirectoryName(Path.GetFullPath(imagePath))!;
        try
        {
            using var dir = SparseFile.OpenDirectory(imageDir);
            return LoadFile(dir, imageDir, Path.GetFileName(imagePath) + StateSuffix);
        }
        catch (IOException)
        {
            return null;
        }
    }

    public const string StateSuffix = ".blockmigrate-state";

    private static int Fchown(SafeFileHandle fd, uint uid, uint gid)
    {
        var added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            return Tmds.Linux.LibC.fchown((int)fd.DangerousGetHandle(), uid, gid);
        }
        finally
        {
            if (added) fd.DangerousRelease();
        }
    }

    private void SaveFile(IReceiverStorage storage, SafeFileHandle dir, string imageDir, string file, (uint Uid, uint Gid)? owner = null)
    {
        var tmp = file + ".tmp";
        using (var fd = storage.Open(dir, tmp, create: true))
        {
            storage.Truncate(fd, 0, StoragePoint.StateWrite);
            storage.Write(fd, JsonSerializer.SerializeToUtf8Bytes(this, ReceiverJson.Default.ReceiverState), 0, StoragePoint.StateWrite);
            if (owner is { } o && Tmds.Linux.LibC.geteuid() == 0 && Fchown(fd, o.Uid, o.Gid) != 0)
                throw new IOException($"{Path.Combine(imageDir, tmp)}: fchown: {Interop.NativeMethods.ErrnoText(Tmds.Linux.LibC.errno)}");
            storage.Sync(fd, StoragePoint.StateSync);
        }
        storage.Rename(imageDir, tmp, file, StoragePoint.StateRename);
        storage.Sync(dir, StoragePoint.DirSync);
    }
}
