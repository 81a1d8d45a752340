using System.Text.Json;
using System.Text.Json.Serialization;
using BlockMigrate.Interop;
using Microsoft.Win32.SafeHandles;

namespace BlockMigrate.Receiver;

/// <summary>
/// The small file beside each received image (NAME.img.blockmigrate-state) saying what the image is:
/// "partial" — a consistent base of lineage L: every block the source saw acknowledged is in it,
/// so a source whose map is relative to L may resume; "committed" — a finished migration that the
/// destination now owns: never overwritten by a new one until an admin removes it.
/// </summary>
public sealed record ReceiverState(string Lineage, string Status, ulong Size, uint BlockSize, string Source, string Updated)
{
    public const string Partial = "partial", Committed = "committed";

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
    public void Save(SafeFileHandle dir, string imageDir, string name)
    {
        var tmp = DiskName.StateFile(name) + ".tmp";
        using (var fd = SparseFile.OpenInDirectory(dir, tmp, create: true))
        {
            SparseFile.Truncate(fd, 0);
            RandomAccess.Write(fd, JsonSerializer.SerializeToUtf8Bytes(this, ReceiverJson.Default.ReceiverState), 0);
            SparseFile.Sync(fd);
        }
        File.Move(Path.Combine(imageDir, tmp), Path.Combine(imageDir, DiskName.StateFile(name)), overwrite: true);
        SparseFile.Sync(dir);
    }
}
