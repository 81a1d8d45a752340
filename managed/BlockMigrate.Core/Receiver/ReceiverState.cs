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
/// </list>
/// Each change is written to a temporary file, fsynced, renamed over the state file, and the directory
/// fsynced. A fresh copy over a handed-over, committed, gated or foreign image needs
/// <see cref="ReceiverOptions.Overwrite"/>.
/// </summary>
public sealed record ReceiverState(string Lineage, string Status, ulong Size, uint BlockSize, string Source, string Updated)
{
    public const string Preparing = "preparing", Partial = "partial", HandedOver = "handed-over", Committed = "committed";

    public static ReceiverState? Load(SafeFileHandle dir, string imageDir, string name)
    {
        var path = Path.Combine(imageDir, DiskName.StateFile(name));
        if (!File.Exists(path)) return null;
        try
        {
            using var fd = SparseFile.OpenInDirectory(dir, DiskName.StateFile(name), create: false);
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
    internal void Save(IReceiverStorage storage, SafeFileHandle dir, string imageDir, string name)
    {
        var tmp = DiskName.StateFile(name) + ".tmp";
        using (var fd = storage.Open(dir, tmp, create: true))
        {
            storage.Truncate(fd, 0, StoragePoint.StateWrite);
            storage.Write(fd, JsonSerializer.SerializeToUtf8Bytes(this, ReceiverJson.Default.ReceiverState), 0, StoragePoint.StateWrite);
            storage.Sync(fd, StoragePoint.StateSync);
        }
        storage.Rename(imageDir, tmp, DiskName.StateFile(name), StoragePoint.StateRename);
        storage.Sync(dir, StoragePoint.DirSync);
    }
}
