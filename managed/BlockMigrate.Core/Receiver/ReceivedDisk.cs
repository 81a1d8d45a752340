using BlockMigrate.Interop;
using BlockMigrate.Maps;
using BlockMigrate.Protocol;
using Microsoft.Win32.SafeHandles;

namespace BlockMigrate.Receiver;

/// <summary>One disk being received: its image (opened inside the image directory, no symlink followed), its state file, its gate.</summary>
internal sealed class ReceivedDisk : IDisposable
{
    private readonly SafeFileHandle _dir;
    private readonly string _imageDir;
    private readonly byte[] _buffer = new byte[DataHeader.MaxDataLength];

    private ReceivedDisk(SafeFileHandle dir, string imageDir, DiskOffer offer, SafeFileHandle image, string source, bool resume, GateLink? gate)
    {
        _dir = dir;
        _imageDir = imageDir;
        Offer = offer;
        Image = image;
        Source = source;
        Resume = resume;
        Gate = gate;
    }

    public DiskOffer Offer { get; }
    public string Name => Offer.Name;
    public SafeFileHandle Image { get; }
    public string Source { get; }
    public bool Resume { get; }
    public GateLink? Gate { get; }
    /// <summary>Set by the final-set frame: data from now on is the final round (released at the gate as it lands).</summary>
    public bool Final { get; set; }

    public static ReceivedDisk Open(SafeFileHandle dir, string imageDir, DiskOffer offer, string source, string gateDir)
    {
        DiskName.Check(offer.Name);
        if (offer.Size == 0 || offer.Size > 1ul << 50) throw new ReceiverException($"disk {offer.Name}: refused size {offer.Size}");
        if (!DirtyMap.IsValidBlockSize(offer.BlockSize)) throw new ReceiverException($"disk {offer.Name}: refused block size {offer.BlockSize}");
        if (offer.Lineage.Length != 32 || !offer.Lineage.All(Uri.IsHexDigit)) throw new ReceiverException($"disk {offer.Name}: malformed lineage");
        var state = ReceiverState.Load(dir, imageDir, offer.Name);
        if (state?.Status == ReceiverState.Committed)
            throw new ReceiverException($"disk {offer.Name} was already received and committed ({state.Updated}); remove {DiskName.ImageFile(offer.Name)} and {DiskName.StateFile(offer.Name)} from {imageDir} to receive it again");
        SafeFileHandle image;
        try
        {
            image = SparseFile.OpenInDirectory(dir, DiskName.ImageFile(offer.Name), create: true);
        }
        catch (IOException e)
        {
            throw new ReceiverException($"disk {offer.Name}: cannot open {DiskName.ImageFile(offer.Name)} in {imageDir}: {e.Message}");
        }
        try
        {
            var resume = offer.Resume && state is { Status: ReceiverState.Partial } && state.Lineage == offer.Lineage
                         && state.Size == offer.Size && state.BlockSize == offer.BlockSize && state.Source == source
                         && (ulong)RandomAccess.GetLength(image) == offer.Size;
            if (!resume)
            {
                SparseFile.Truncate(image, 0);
                SparseFile.Truncate(image, (long)offer.Size);
                new ReceiverState(offer.Lineage, ReceiverState.Partial, offer.Size, offer.BlockSize, source, Now()).Save(dir, imageDir, offer.Name);
            }
            var gate = GateLink.Open(gateDir, offer.Name);
            if (offer.Finish && !(resume && gate != null))
            {
                gate?.Dispose();
                throw new ReceiverException(resume
                    ? $"disk {offer.Name}: cannot finish a handed-over migration: no gate map {Path.Combine(gateDir, offer.Name + ".map")} says which blocks are still missing"
                    : $"disk {offer.Name}: cannot finish a handed-over migration: this receiver holds no partial copy of lineage {offer.Lineage}");
            }
            // a new copy (or a resume before any hand-over) replaces whatever an earlier attempt left gated
            if (gate != null && !offer.Finish) gate.ReleaseAll();
            return new ReceivedDisk(dir, imageDir, offer, image, source, resume, gate) { Finishing = offer.Finish, Final = offer.Finish };
        }
        catch (IOException e)
        {
            image.Dispose();
            throw new ReceiverException(SparseFile.IsDiskFull(e)
                ? $"disk full: preparing {DiskName.ImageFile(offer.Name)} in {imageDir}: No space left on device"
                : $"disk {offer.Name}: cannot prepare {DiskName.ImageFile(offer.Name)} in {imageDir}: {e.Message}");
        }
        catch
        {
            image.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Set when the source finishes a handed-over migration (<see cref="DiskOffer.Finish"/>): the
    /// destination VM may be running, so only blocks the gate still holds are written.
    /// </summary>
    public bool Finishing { get; private set; }

    /// <summary>Blocks of data frames not written because the gate no longer held them (finishing only).</summary>
    public ulong SkippedBlocks { get; private set; }

    /// <summary>Writes one data frame's range; returns the whole blocks it covered.</summary>
    public (ulong First, ulong Count) Write(DataHeader h, ReadOnlySpan<byte> body)
    {
        if (h.Offset > Offer.Size || h.Length > Offer.Size - h.Offset)
            throw new ProtocolException($"disk {Name}: data frame for bytes {h.Offset}+{h.Length} past the end ({Offer.Size})");
        if (h.Offset % Offer.BlockSize != 0)
            throw new ProtocolException($"disk {Name}: data frame at {h.Offset} is not block-aligned");
        var first = h.Offset / Offer.BlockSize;
        var count = (h.Length + Offer.BlockSize - 1) / Offer.BlockSize;
        try
        {
            if (h.Encoding is DataEncoding.Lz4 or DataEncoding.Zstd)
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
        catch (IOException e) when (SparseFile.IsDiskFull(e))
        {
            throw new ReceiverException($"disk full: writing {DiskName.ImageFile(Name)} in {_imageDir} at offset {h.Offset}: No space left on device");
        }
        return (first, count);
    }

    private void WriteRange(bool zero, ReadOnlySpan<byte> data, ulong offset, ulong length)
    {
        if (zero) SparseFile.Zero(Image, (long)offset, (long)length);
        else RandomAccess.Write(Image, data, (long)offset);
    }

    public void Sync() => SparseFile.Sync(Image);

    public void MarkCommitted() =>
        new ReceiverState(Offer.Lineage, ReceiverState.Committed, Offer.Size, Offer.BlockSize, Source, Now()).Save(_dir, _imageDir, Name);

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

    private static string Now() => DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ");

    public void Dispose()
    {
        Gate?.Dispose();
        Image.Dispose();
    }
}
