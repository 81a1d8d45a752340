using BlockMigrate.Receiver;

namespace BlockMigrate.Engine;

/// <summary>The return trip, source side (docs/DESIGN.md, "The return trip").</summary>
public sealed partial class Migration
{
    private ulong ReturnBaseBlocks => (ulong)_disks.Sum(d => (decimal)d.ReturnBaseBlocks);


    /// <summary>
    /// After the commit: the source VM is stopped for good (frozen) and its image final. Beside each image
    /// the state file now says "handed-away": generation G of lineage D, with the image's description
    /// (<see cref="ReturnRecord"/>), so that a return trip of D from generation G may start from it.
    /// Best effort: without the record a return is a full copy, nothing worse. A thawed source (no
    /// hypervisor, no --keep-source-frozen) that is written again changes the ctime: the record then
    /// refuses the base, as it must.
    /// </summary>
    private void RecordHandOver()
    {
        foreach (var d in _disks)
        {
            if (d.DiskLineage == null) continue;
            try
            {
                var record = ReturnRecord.Take(d.Image, d.Spec.ImagePath, d.BlockSize, out var why);
                if (record == null)
                {
                    Say($"disk {d.Name}: no return base recorded: {d.Spec.ImagePath} is {why}");
                    continue;
                }
                new ReceiverState(d.Cookie!.LineageHex, ReceiverState.HandedAway, d.Size, d.BlockSize, _channel!.Peer,
                        DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ"), d.DiskLineage, d.Generation, record)
                    .SaveBeside(d.Spec.ImagePath, ReturnRecord.OwnerOf(d.Image, d.Spec.ImagePath));
                Say($"disk {d.Name}: recorded {d.Spec.ImagePath} as generation {d.Generation} of lineage {d.DiskLineage} (a return trip may start from it)");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or BlockMigrateException)
            {
                Warn($"disk {d.Name}: no return base recorded beside {d.Spec.ImagePath}: {e.Message} (a return trip will be a full copy)");
            }
        }
    }
}
