using System.Diagnostics;
using BlockMigrate.Interop;
using BlockMigrate.Maps;
using BlockMigrate.Protocol;
using Microsoft.Win32.SafeHandles;
using BlockMigrate.Logging;
using Microsoft.Extensions.Logging;

namespace BlockMigrate.Receiver;

/// <summary>One disk being received: its image (opened inside the image directory, no symlink followed), its state file, its gate.</summary>
internal sealed class ReceivedDisk : IDisposable
{
    private readonly SafeFileHandle _dir;
    private readonly string _imageDir;
    private readonly byte[] _buffer = new byte[DataHeader.MaxDataLength];

    private readonly IReceiverStorage _storage;

    private ReceivedDisk(SafeFileHandle dir, string imageDir, IReceiverStorage storage, DiskOffer offer, SafeFileHandle image, string source,
        bool resume, GateLink? gate, string status)
    {
        _dir = dir;
        _imageDir = imageDir;
        _storage = storage;
        Offer = offer;
        Image = image;
        Source = source;
        Resume = resume;
        Gate = gate;
        Status = status;
    }

    public DiskOffer Offer { get; }
    public string Name => Offer.Name;
    public SafeFileHandle Image { get; }
    public string Source { get; }
    public bool Resume { get; }
    public GateLink? Gate { get; }
    /// <summary>Set by the final-set frame: data from now on is the final round (released at the gate as it lands).</summary>
    public bool Final { get; set; }
    /// <summary>What the state file says now (<see cref="ReceiverState"/>).</summary>
    public string Status { get; private set; }

    /// <summary>How long the latest durable state record took (write, fsync, rename, directory fsync); null before one.</summary>
    public TimeSpan? LastRecord { get; private set; }

    /// <summary>
    /// Checks the offer against what the image directory and the gate hold, then opens (a resume) or
    /// prepares (a fresh copy: the state file first, then the image truncated) the image. A fresh copy
    /// that would overwrite a handed-over, committed, gated or foreign image is refused before anything
    /// is written, unless <paramref name="overwrite"/> (<c>receive --overwrite</c>).
    /// </summary>
    public static ReceivedDisk Open(SafeFileHandle dir, ReceiverOptions options, DiskOffer offer, string source, ILogger? log = null)
    {
        var imageDir = options.ImageDir;
        var storage = options.Storage ?? PosixStorage.Instance;
        DiskName.Check(offer.Name);
        if (offer.Size == 0 || offer.Size > 1ul << 50) throw new ReceiverException($"disk {offer.Name}: refused size {offer.Size}");
        if (!DirtyMap.IsValidBlockSize(offer.BlockSize)) throw new ReceiverException($"disk {offer.Name}: refused block size {offer.BlockSize}");
        if (offer.Lineage.Length != 32 || !offer.Lineage.All(Uri.IsHexDigit)) throw new ReceiverException($"disk {offer.Name}: malformed lineage");
        var imageFile = DiskName.ImageFile(offer.Name);
        var state = ReceiverState.Load(dir, imageDir, offer.Name);
        var gate = GateLink.Open(options.GateMapDir, offer.Name);
        SafeFileHandle? image = null;
        try
        {
            // what is there now, before anything is written
            image = TryOpenExisting(dir, imageFile, imageDir, offer.Name);
            var length = image == null ? -1 : RandomAccess.GetLength(image);
            var held = gate?.Held ?? 0;
            var sameCopy = image != null && state != null && state.Lineage == offer.Lineage && state.Size == offer.Size
                           && state.BlockSize == offer.BlockSize && state.Source == source && (ulong)length == offer.Size;
            var resume = offer.Resume && sameCopy && state!.Status is ReceiverState.Partial or ReceiverState.HandedOver;
            // the return trip: keep the image only when its record proves it is the claimed hand-over state, untouched since
            string? returnRefused = null;
            if (!resume && offer.ReturnBase is { } claimed)
            {
                returnRefused = ReturnRefusal(state, image, imageFile, offer, claimed, held);
                log?.Line(returnRefused == null
                    ? $"disk {offer.Name}: return base accepted: {imageFile} is generation {claimed} of lineage {offer.DiskLineage}, untouched since its hand-over; only the blocks written since are sent"
                    : $"disk {offer.Name}: return base refused: {returnRefused}; full copy");
            }
            var returnBase = offer.ReturnBase != null && returnRefused == null;
            if (offer.Finish && !(resume && gate != null))
                throw new ReceiverException(resume
                    ? $"disk {offer.Name}: cannot finish a handed-over migration: no gate map {Path.Combine(options.GateMapDir, offer.Name + ".map")} says which blocks are still missing"
                    : $"disk {offer.Name}: cannot finish a handed-over migration: this receiver holds no partial copy of lineage {offer.Lineage}");
            if (!resume && !returnBase)
            {
                var inUse = state?.Status switch
                {
                    ReceiverState.Committed => $"it was received and committed ({state.Updated}); a VM may run on it",
                    ReceiverState.HandedOver => $"it was handed over ({state.Updated}) and its migration never committed; a VM may run on it (re-run that migration to finish it)",
                    _ when held > 0 => $"its gate ({Path.Combine(options.GateMapDir, offer.Name + ".map")}) still holds {held} blocks of a handed-over migration; a VM may run on it (re-run that migration to finish it)",
                    null when image != null && HasData(image, length) => "it exists and has data, but no state file says BlockMigrate wrote it (another VM's disk?)",
                    _ => null,
                };
                if (inUse != null)
                {
                    if (!options.Overwrite)
                        throw new ReceiverException($"disk {offer.Name}: refused to overwrite {imageFile} in {imageDir}: {inUse}; to replace it, remove {imageFile} and {DiskName.StateFile(offer.Name)} or run the receiver with --overwrite");
                    log?.Warning($"disk {offer.Name}: overwriting {imageFile} (--overwrite): {inUse}");
                }
            }
            if (image == null)
                image = OpenImage(storage, dir, imageFile, imageDir, offer.Name);
            var status = resume ? state!.Status : ReceiverState.Partial;
            // what the commit records: kept from the copy's start through resumes
            var diskLineage = resume ? state!.DiskLineage : offer.DiskLineage?.ToLowerInvariant();
            var generation = resume ? state!.Generation : offer.Generation;
            TimeSpan? record = null; // what the last state record took (the switchover's records cost the same)
            if (returnBase)
            {
                // the handed-away record is consumed here: from now on the image is a partial copy of this
                // migration's lineage (a resume continues it), never again a base for the same claim
                record = Timed(() => new ReceiverState(offer.Lineage, ReceiverState.Partial, offer.Size, offer.BlockSize, source, Now(), diskLineage, generation).Save(storage, dir, imageDir, offer.Name));
            }
            else if (!resume)
            {
                // "preparing" first: an older lineage's record must not survive a truncation that fails
                // half-way (its source would resume from a wiped image); "partial" only once it is empty
                new ReceiverState(offer.Lineage, ReceiverState.Preparing, offer.Size, offer.BlockSize, source, Now(), diskLineage, generation).Save(storage, dir, imageDir, offer.Name);
                storage.Truncate(image, 0, StoragePoint.ImageTruncate);
                storage.Truncate(image, (long)offer.Size, StoragePoint.ImageTruncate);
                storage.Sync(image, StoragePoint.FlushSync);
                record = Timed(() => new ReceiverState(offer.Lineage, ReceiverState.Partial, offer.Size, offer.BlockSize, source, Now(), diskLineage, generation).Save(storage, dir, imageDir, offer.Name));
            }
            // a new copy (or a resume before any hand-over) replaces whatever an earlier attempt left gated
            if (gate != null && !offer.Finish) gate.ReleaseAll();
            var disk = new ReceivedDisk(dir, imageDir, storage, offer, image, source, resume, gate, status)
            {
                Finishing = offer.Finish, Final = offer.Finish, ReturnBase = returnBase, ReturnRefused = returnRefused,
                DiskLineage = diskLineage, Generation = generation, LastRecord = record,
            };
            image = null;
            gate = null;
            return disk;
        }
        catch (IOException e)
        {
            throw new ReceiverException(SparseFile.IsDiskFull(e)
                ? $"disk full: preparing {imageFile} in {imageDir}: No space left on device"
                : $"disk {offer.Name}: cannot prepare {imageFile} in {imageDir}: {e.Message}");
        }
        finally
        {
            image?.Dispose();
            gate?.Dispose();
        }
    }

    /// <summary>
    /// Why the image cannot be the base of the claimed return (null: it can): the state file beside it must
    /// be a source's "handed-away" record of the same disk lineage, generation and geometry, and the image
    /// must still be the very file it describes, unchanged (<see cref="ReturnRecord.Mismatch"/>).
    /// </summary>
    private static string? ReturnRefusal(ReceiverState? state, SafeFileHandle? image, string imageFile, DiskOffer offer, ulong claimed, ulong held)
    {
        if (image == null) return $"record missing: there is no {imageFile} here";
        if (state == null) return $"record missing: no state file beside {imageFile}";
        if (state.Status != ReceiverState.HandedAway)
            return $"record missing: {imageFile} is {state.Status}, not the hand-over state a source recorded";
        if (state.Return == null) return "record missing: the hand-over recorded no description of the image";
        if (!string.Equals(state.DiskLineage, offer.DiskLineage, StringComparison.OrdinalIgnoreCase))
            return $"different lineage: {imageFile} belongs to lineage {state.DiskLineage ?? "(none)"}, the source offers {offer.DiskLineage}";
        if (state.Generation != claimed)
            return $"generation: {imageFile} holds generation {state.Generation}, the source's map is relative to generation {claimed}";
        // the block sizes may differ (each end's map has its own); the sample was read in the recorded one
        if (state.Size != offer.Size)
            return $"image changed: recorded {state.Size} bytes, the source offers {offer.Size}";
        if (held > 0) return $"image in use: its gate holds {held} blocks";
        try
        {
            return state.BlockSize == 0 || state.BlockSize > 1u << 30 ? "record missing: it names no block size"
                : state.Return.Mismatch(image, imageFile, state.BlockSize) is { } why ? "image changed: " + why : null;
        }
        catch (IOException e)
        {
            return $"image changed: cannot check it: {e.Message}";
        }
    }

    /// <summary>The offer's return claim was accepted: the image is kept and only the source's map is sent.</summary>
    public bool ReturnBase { get; private init; }
    /// <summary>Why the offer's return claim was refused (null: accepted, or none made).</summary>
    public string? ReturnRefused { get; private init; }
    /// <summary>What the commit records (<see cref="ReceiverState.DiskLineage"/>, <see cref="ReceiverState.Generation"/>).</summary>
    public string? DiskLineage { get; private init; }
    public ulong Generation { get; private init; }

    private static SafeFileHandle? TryOpenExisting(SafeFileHandle dir, string imageFile, string imageDir, string name)
    {
        if (!Path.Exists(Path.Combine(imageDir, imageFile)) && !IsSymlink(Path.Combine(imageDir, imageFile))) return null;
        return OpenImage(PosixStorage.Instance, dir, imageFile, imageDir, name, create: false);
    }

    private static bool IsSymlink(string path)
    {
        try
        {
            return new FileInfo(path).LinkTarget != null;
        }
        catch (IOException)
        {
            return false;
        }
    }

    private static SafeFileHandle OpenImage(IReceiverStorage storage, SafeFileHandle dir, string imageFile, string imageDir, string name, bool create = true)
    {
        try
        {
            return storage.Open(dir, imageFile, create);
        }
        catch (IOException e)
        {
            throw new ReceiverException($"disk {name}: cannot open {imageFile} in {imageDir}: {e.Message}");
        }
    }

    /// <summary>Whether any byte of the image is allocated (an image of holes only has nothing to lose).</summary>
    private static bool HasData(SafeFileHandle image, long length) => length > 0 && SparseFile.NextData(image, 0, length) < length;

    /// <summary>
    /// Set when the source finishes a handed-over migration (<see cref="DiskOffer.Finish"/>): the
    /// destination VM may be running, so only blocks the gate still holds are written.
    /// </summary>
    public bool Finishing { get; private init; }

    /// <summary>Blocks of data frames not written because the gate no longer held them (finishing only).</summary>
    public ulong SkippedBlocks { get; private set; }

    /// <summary>Writes one data frame's range; returns the whole blocks it covered.</summary>
    public (ulong First, ulong Count) Write(DataHeader h, ReadOnlySpan<byte> body)
    {
        if (h.Offset > Offer.Size || h.Length > Offer.Size - h.Offset)
            throw new ProtocolException($"disk {Name}: data frame for bytes {h.Offset}+{h.Length} past the end ({Offer.Size})");
        if (h.Offset % Offer.BlockSize != 0)
            throw new ProtocolException($"disk {Name}: data frame at {h.Offset} is not block-aligned");
        // whole blocks only (the disk's last block may be short): the blocks a frame releases at the gate
        // and acknowledges are exactly the blocks it wrote; a zero range cannot punch part of a block
        if ((h.Offset + h.Length) % Offer.BlockSize != 0 && h.Offset + h.Length != Offer.Size)
            throw new ProtocolException($"disk {Name}: data frame for bytes {h.Offset}+{h.Length} ends inside a block");
        var first = h.Offset / Offer.BlockSize;
        var count = (h.Length + Offer.BlockSize - 1) / Offer.BlockSize;
        try
        {
            if (BlockCodec.Of(h.Encoding) is not null)
            {
                var target = _buffer.AsSpan(0, (int)h.Length);
                BlockCodec.Decode(h.Encoding, body, target);
                body = target;
            }
            if (!Finishing)
            {
                WriteRange(h.Encoding == DataEncoding.Zero, body, h.Offset, h.Length);
                return (first, count);
            }
            var zero = h.Encoding == DataEncoding.Zero;
            ulong written = 0;
            foreach (var (runFirst, runCount) in Gate!.StillGated(first, count))
            {
                var from = Math.Max(runFirst * Offer.BlockSize, h.Offset);
                var to = Math.Min((runFirst + runCount) * Offer.BlockSize, h.Offset + h.Length);
                WriteRange(zero, zero ? default : body[(int)(from - h.Offset)..(int)(to - h.Offset)], from, to - from);
                written += runCount;
            }
            SkippedBlocks += count - written;
        }
        catch (IOException e)
        {
            throw new ReceiverException(SparseFile.IsDiskFull(e)
                ? $"disk full: writing {DiskName.ImageFile(Name)} in {_imageDir} at offset {h.Offset}: No space left on device"
                : $"disk {Name}: write error: writing {DiskName.ImageFile(Name)} in {_imageDir} at offset {h.Offset}: {e.Message}");
        }
        return (first, count);
    }

    /// <summary>The body of the last compressed data frame, decoded (valid until the next <see cref="Write"/>).</summary>
    public ReadOnlySpan<byte> Decoded(int length) => _buffer.AsSpan(0, length);

    /// <summary>Writes one whole block copied from a seed (checked by the caller: its hash is the one the source sent).</summary>
    public void WriteBlock(ulong block, ReadOnlySpan<byte> data)
    {
        var offset = block * Offer.BlockSize;
        if (data.Length != Offer.BlockSize || offset + Offer.BlockSize > Offer.Size)
            throw new ProtocolException($"disk {Name}: block {block} is not a whole block of the disk");
        try
        {
            WriteRange(false, data, offset, Offer.BlockSize);
        }
        catch (IOException e)
        {
            throw new ReceiverException(SparseFile.IsDiskFull(e)
                ? $"disk full: writing {DiskName.ImageFile(Name)} in {_imageDir} at offset {offset}: No space left on device"
                : $"disk {Name}: write error: writing {DiskName.ImageFile(Name)} in {_imageDir} at offset {offset}: {e.Message}");
        }
    }

    private void WriteRange(bool zero, ReadOnlySpan<byte> data, ulong offset, ulong length)
    {
        if (zero) _storage.Zero(Image, (long)offset, (long)length, StoragePoint.ZeroWrite);
        else _storage.Write(Image, data, (long)offset, StoragePoint.DataWrite);
    }

    /// <summary>fsync of the image; any error is a <see cref="ReceiverException"/> that fails the session.</summary>
    public void Sync(StoragePoint point)
    {
        try
        {
            _storage.Sync(Image, point);
        }
        catch (IOException e)
        {
            throw new ReceiverException(SparseFile.IsDiskFull(e)
                ? $"disk full: fsync of {DiskName.ImageFile(Name)} in {_imageDir}: No space left on device"
                : $"disk {Name}: write error: fsync of {DiskName.ImageFile(Name)} in {_imageDir}: {e.Message}");
        }
    }

    /// <summary>Records the final set of a gated disk (before it is acknowledged: the source may hand over then).</summary>
    public void MarkHandedOver() => SetStatus(ReceiverState.HandedOver);

    public void MarkCommitted() => SetStatus(ReceiverState.Committed);

    /// <summary>
    /// Puts the state file back to <paramref name="status"/> after a failed commit (a rename may have
    /// landed before the directory's fsync failed). Best effort: false if that failed too.
    /// </summary>
    public bool Restore(string status)
    {
        try
        {
            SetStatus(status);
            return true;
        }
        catch (ReceiverException)
        {
            return false;
        }
    }

    private void SetStatus(string status)
    {
        try
        {
            LastRecord = Timed(() => new ReceiverState(Offer.Lineage, status, Offer.Size, Offer.BlockSize, Source, Now(), DiskLineage, Generation).Save(_storage, _dir, _imageDir, Name));
            Status = status;
        }
        catch (IOException e)
        {
            throw new ReceiverException(SparseFile.IsDiskFull(e)
                ? $"disk full: recording disk {Name} as {status} in {DiskName.StateFile(Name)} in {_imageDir}: No space left on device"
                : $"disk {Name}: write error: recording it as {status} in {DiskName.StateFile(Name)} in {_imageDir}: {e.Message}");
        }
    }

    public string Hash()
    {
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        for (long pos = 0; pos < (long)Offer.Size;)
        {
            var n = RandomAccess.Read(Image, _buffer, pos);
            if (n == 0) break;
            sha.AppendData(_buffer, 0, n);
            pos += n;
        }
        return Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant();
    }

    /// <summary>The hole-aware digest (<see cref="Verify.NonzeroDigest"/>): reads the image's data, not its holes.</summary>
    public string NonzeroHash() => Verify.NonzeroDigest.Compute(Image, (long)Offer.Size).Hex;

    /// <summary>How long <paramref name="record"/> (a state record's save) took.</summary>
    private static TimeSpan Timed(Action record)
    {
        var started = Stopwatch.GetTimestamp();
        record();
        return Stopwatch.GetElapsedTime(started);
    }

    private static string Now() => DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ");

    public void Dispose()
    {
        Gate?.Dispose();
        Image.Dispose();
    }
}
