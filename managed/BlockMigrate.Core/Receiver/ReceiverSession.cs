using System.Text;
using BlockMigrate.Protocol;
using BlockMigrate.Transport;
using Microsoft.Win32.SafeHandles;
using BlockMigrate.Logging;
using Microsoft.Extensions.Logging;

namespace BlockMigrate.Receiver;

/// <summary>
/// One source's migration, from the receiver's side: handshake, then frames in order: data is written
/// (pwrite, or a punched hole for zeros); a flusher task fsyncs the images as soon as frames are written
/// (one fsync covers every frame written before it began, so fsyncs batch themselves) and an ack task
/// acknowledges cumulatively the highest sequence number covered by a completed fsync: an Ack promises
/// that everything up to it is on disk. The final set of a gated disk is recorded ("handed-over", durable)
/// before the gate marks its blocks stale. Commit fsyncs every image and records the commit, then
/// answers Committed; nothing is written after it. Any failure (a write or fsync error included) is sent
/// to the source as one line and nothing more is acknowledged or committed.
/// </summary>
internal sealed class ReceiverSession(SecureChannel channel, ReceiverOptions options, SafeFileHandle dir, BusySet busy, ILogger log)
{
    private readonly FrameReader _reader = new(channel.Stream);
    private readonly FrameWriter _writer = new(channel.Stream);
    private readonly List<ReceivedDisk> _disks = [];
    private readonly SemaphoreSlim _ackSignal = new(0);
    private readonly SemaphoreSlim _flushSignal = new(0);
    private readonly object _syncLock = new();       // one fsync round at a time; _fault is set under it
    private readonly CancellationTokenSource _failed = new(); // cancelled when the flusher fails
    private readonly Dictionary<ushort, ulong> _finalNext = []; // per disk: where its next final-set range may start
    private long _processed;   // highest sequence number written (Interlocked)
    private long _durable;     // highest sequence number covered by a completed fsync (Interlocked)
    private ReceiverException? _fault; // a write or fsync error of the flusher (_syncLock)
    private bool _committed;
    private string? _memoryKeyDir; // the destination QEMU's keys.psk for this migration's memory stream; removed at the end
    private SeedStore? _seeds;     // this migration's seeds and their index (null: none, no exchange)
    private readonly Dictionary<ushort, ulong> _seedNext = []; // per disk: where its next seed-hashes range may start
    private readonly List<int> _seedFiles = [];                 // per disk: its image's number in _seeds

    /// <summary>Returns true when the migration was committed.</summary>
    public async Task<bool> RunAsync(CancellationToken ct)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var acker = Task.Run(() => AckLoopAsync(stop.Token), CancellationToken.None);
        var flusher = Task.Run(() => FlushLoopAsync(stop.Token), CancellationToken.None);
        try
        {
            await HandshakeAsync(ct);
            await FramesAsync(ct);
        }
        catch (Exception e) when (e is BlockMigrateException or IOException or OperationCanceledException)
        {
            ReceiverException? fault;
            lock (_syncLock) fault = _fault;
            var message = e switch
            {
                _ when fault != null => fault.Message,
                OperationCanceledException when !ct.IsCancellationRequested => $"no frame from the source for {options.IdleTimeout.TotalSeconds:0} s",
                OperationCanceledException => "receiver shutting down",
                IOException io => $"link to the source failed: {io.Message}",
                _ => e.Message,
            };
            log.Line($"migration from {channel.Peer} failed: {message}");
            if (e is not IOException || fault != null)
                await TrySendErrorAsync(message);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // a bug must not take the receiver (and every other session) down: one line each side
            var message = $"internal error: {e.GetType().Name}: {PeerText.Clean(e.Message)}";
            log.Line($"migration from {channel.Peer} failed: {message}");
            await TrySendErrorAsync(message);
        }
        finally
        {
            await stop.CancelAsync();
            try
            {
                await acker;
            }
            catch (Exception) { /* the link is gone */ }
            try
            {
                await flusher;
            }
            catch (Exception) { /* its failure is in _fault */ }
            MemoryKey.Remove(_memoryKeyDir);
            if (_seeds != null) log.Line($"seeds: {_seeds.Supplied} blocks written from seeds or earlier blocks" + (_seeds.Stale > 0 ? $"; {_seeds.Stale} had changed since they were indexed (sent instead)" : ""));
            _seeds?.Dispose();
            foreach (var d in _disks)
            {
                // acknowledged blocks were fsynced before their ack: the image is a consistent base for a resume
                if (!_committed) ReleaseOrHold(d);
                busy.Remove(d.Name);
                d.Dispose();
            }
        }
        return _committed;
    }

    /// <summary>
    /// A failed session releases the gate, unless the final set had arrived: then the source may have let
    /// the destination VM run, and the blocks still missing stay held until a re-run delivers them.
    /// </summary>
    private void ReleaseOrHold(ReceivedDisk d)
    {
        if (d.Gate == null) return;
        try
        {
            var held = d.Final ? d.Gate.Held : 0;
            if (held == 0)
            {
                d.Gate.ReleaseAll();
                return;
            }
            log.Line($"disk {d.Name}: {held} blocks of the final set had not landed; the gate keeps holding them (the destination VM, if it runs, waits on them): re-run the source's migrate to finish");
        }
        catch (BlockMigrateException e)
        {
            log.Line($"disk {d.Name}: gate: {e.Message}");
        }
    }

    private async Task HandshakeAsync(CancellationToken ct)
    {
        // decoding checks every field (HelloMessage.Validate → MessageChecks)
        using var helloFrame = await ReadAsync(ct) ?? throw new ReceiverException("source closed the connection before its hello");
        var hello = ProtocolJson.Decode(helloFrame, FrameType.Hello, ProtocolJson.Default.HelloMessage);
        if (hello.Version != HelloMessage.CurrentVersion)
            throw new ReceiverException($"protocol version {hello.Version} not supported (this receiver speaks {HelloMessage.CurrentVersion})");
        foreach (var offer in hello.Disks) DiskName.Check(offer.Name);
        SpaceCheck.Check(dir, options.ImageDir, hello.Disks, log);
        var answers = new List<DiskAnswer>();
        foreach (var offer in hello.Disks)
        {
            if (!busy.TryAdd(offer.Name)) throw new ReceiverException($"disk {offer.Name} is being received from another source right now");
            try
            {
                var d = ReceivedDisk.Open(dir, options, offer, channel.Peer, log);
                lock (_disks) _disks.Add(d);
                answers.Add(new DiskAnswer(offer.Name, d.Resume, d.Gate != null, d.ReturnBase, d.ReturnRefused, d.DiskLineage, d.DiskLineage == null ? 0 : d.Generation));
                log.Line($"disk {offer.Name}: {(d.Finishing ? "finishing the hand-over of" : d.Resume ? "resuming" : "receiving")} {offer.Size} bytes into {Path.Combine(options.ImageDir, DiskName.ImageFile(offer.Name))}{(d.Gate != null ? " (gated)" : "")}");
            }
            catch
            {
                busy.Remove(offer.Name);
                throw;
            }
        }
        if (hello.MemoryKey != null)
        {
            if (!MemoryKey.IsValid(hello.MemoryKey)) throw new ReceiverException("the memory stream's key is not 64 hex digits");
            _memoryKeyDir = MemoryKey.WriteDirectory(hello.MemoryKey);
            log.Line($"memory stream key for the destination QEMU in {_memoryKeyDir} (until this session ends)");
        }
        _seeds = SeedStore.Open(options, log);
        if (_seeds != null)
            foreach (var d in _disks) _seedFiles.Add(_seeds.AddImage(d.Image, DiskName.ImageFile(d.Name)));
        var record = _disks.Select(d => d.LastRecord).Max();
        await _writer.WriteAsync(FrameType.Welcome, ProtocolJson.Encode(new WelcomeMessage(answers, BlockCodec.Advertised, _memoryKeyDir, _seeds?.KeyHex,
                record is { } r ? Math.Round(r.TotalMilliseconds, 2) : null),
            ProtocolJson.Default.WelcomeMessage), default, ct);
    }

    private async Task FramesAsync(CancellationToken ct)
    {
        while (true)
        {
            using var frame = await ReadAsync(ct); // owns a pooled buffer until the end of this iteration (see Frame)
            if (frame == null)
            {
                if (!_committed) log.Line($"source {channel.Peer} closed the connection before the commit");
                return;
            }
            if (_committed && frame.Type is not (FrameType.Verify or FrameType.Error))
                throw new ProtocolException($"{frame.Type} frame {frame.Sequence} after the commit: the images are committed and no longer written");
            switch (frame.Type)
            {
                case FrameType.Data:
                {
                    var h = DataHeader.Read(frame.Span);
                    var disk = Disk(h.Disk);
                    var (first, count) = disk.Write(h, frame.Span[DataHeader.Size..]);
                    if (disk.Final) disk.Gate?.Landed(first, count);
                    if (_seeds != null && h.Encoding != DataEncoding.Zero && !disk.Finishing) IndexReceived(h, disk, frame.Span[DataHeader.Size..]);
                    Wrote(frame.Sequence);
                    Processed(frame.Sequence);
                    break;
                }
                case FrameType.SeedHashes:
                    await SeedHashesAsync(SeedHashes.Decode(frame.Span), frame.Sequence, ct);
                    Wrote(frame.Sequence);
                    Processed(frame.Sequence);
                    break;
                case FrameType.FinalSet:
                {
                    var set = FinalSet.Decode(frame.Span);
                    var disk = Disk(set.Disk);
                    CheckFinalSet(set, disk);
                    // the source may let the destination VM run once this is acknowledged: from then on
                    // a fresh copy must not overwrite the image (recorded durably before the ack)
                    if (!disk.Final && disk.Gate != null && !disk.Finishing)
                    {
                        disk.MarkHandedOver();
                        // the destination VM may run once this is acknowledged: its writes from then on are what a return trip sends
                        disk.Gate.ClearWritten();
                    }
                    disk.Final = true;
                    // finishing: the gate already holds exactly what is missing; marking again could
                    // re-gate a block the running destination VM has written since
                    if (!disk.Finishing) disk.Gate?.MarkStale(set.Ranges);
                    Processed(frame.Sequence);
                    break;
                }
                case FrameType.Commit:
                    Commit();
                    _committed = true;
                    MarkReturnable();
                    foreach (var d in _disks) d.Gate?.ReleaseAll();
                    await _writer.WriteAsync(FrameType.Committed, ct);
                    log.Line($"committed {string.Join(", ", _disks.Select(d => d.Name))} from {channel.Peer}");
                    foreach (var d in _disks.Where(d => d.Finishing))
                        log.Line($"disk {d.Name}: hand-over finished; {d.SkippedBlocks} blocks sent again were not written (already there, and the VM may have written them since)");
                    break;
                case FrameType.Verify:
                    if (!_committed) throw new ProtocolException("verify before commit");
                    var digest = VerifyRequest.Decode(frame.Span).Digest;
                    var nonzero = digest == VerifyDigest.Nonzero;
                    var hashes = await Task.Run(() => _disks.Select(d => nonzero ? d.NonzeroHash() : d.Hash()).ToList(), ct);
                    var result = new VerifyResultMessage(hashes, nonzero ? VerifyResultMessage.NonzeroDigestName : null);
                    await _writer.WriteAsync(FrameType.VerifyResult, ProtocolJson.Encode(result, ProtocolJson.Default.VerifyResultMessage), default, ct);
                    break;
                case FrameType.Error:
                    log.Line($"source {channel.Peer} gave up: {PeerText.Clean(frame.Span)}");
                    return;
                default:
                    throw new ProtocolException($"unexpected {frame.Type} frame from the source");
            }
        }
    }

    /// <summary>
    /// A final set's ranges lie within the disk and, across its frames, in ascending order without
    /// overlap (<see cref="FinalSet"/>): then marking them costs one pass over the bitmap at most.
    /// </summary>
    private void CheckFinalSet(FinalSet set, ReceivedDisk disk)
    {
        if (set.Ranges.Count == 0) return;
        var blocks = (disk.Offer.Size + disk.Offer.BlockSize - 1) / disk.Offer.BlockSize;
        if (set.Ranges[^1].Last >= blocks)
            throw new ProtocolException($"disk {disk.Name}: final set names block {set.Ranges[^1].Last}, past the end ({blocks} blocks)");
        var next = _finalNext.GetValueOrDefault(set.Disk);
        if (set.Ranges[0].First < next)
            throw new ProtocolException($"disk {disk.Name}: final set ranges out of order or overlapping an earlier frame's");
        _finalNext[set.Disk] = set.Ranges[^1].Last + 1;
    }

    /// <summary>
    /// Writes what it can of a seed-hashes frame from the seeds (each chunk re-hashed as read: only the
    /// bytes asked for are written), then answers which blocks it wrote. The frame is acknowledged like a
    /// data frame, once those writes are fsynced (the caller marks it processed after the answer).
    /// </summary>
    private async Task SeedHashesAsync(SeedHashes set, ulong sequence, CancellationToken ct)
    {
        if (_seeds == null) throw new ProtocolException("seed-hashes frame, but this receiver offered no seeds");
        var disk = Disk(set.Disk);
        if (disk.Final || disk.Finishing) throw new ProtocolException($"disk {disk.Name}: seed-hashes frame after the final set");
        var bs = disk.Offer.BlockSize;
        var whole = disk.Offer.Size / bs; // the short last block is never hashed
        if (set.Ranges[^1].Last >= whole)
            throw new ProtocolException($"disk {disk.Name}: seed-hashes frame names block {set.Ranges[^1].Last}, past its last whole block ({whole} blocks)");
        if (set.Ranges[0].First < _seedNext.GetValueOrDefault(set.Disk))
            throw new ProtocolException($"disk {disk.Name}: seed-hashes ranges out of order or overlapping an earlier frame's");
        _seedNext[set.Disk] = set.Ranges[^1].Last + 1;
        var supplied = new bool[set.Count];
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent((int)bs);
        try
        {
            var i = 0;
            foreach (var block in set.Blocks())
            {
                var chunk = buffer.AsSpan(0, (int)bs);
                if (_seeds.TryRead(set.Hash(i), chunk))
                {
                    disk.WriteBlock(block, chunk);
                    _seeds.AddReceived(_seedFiles[set.Disk], (long)(block * bs), chunk);
                    supplied[i] = true;
                    _seeds.Supplied++;
                }
                i++;
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
        }
        await _writer.WriteAsync(FrameType.SeedAnswer, new SeedAnswer(sequence, set.Count, SeedAnswer.Bitmap(supplied)).Encode(), default, ct);
    }

    /// <summary>Indexes the whole blocks of a data frame just written: later hashes may name them.</summary>
    private void IndexReceived(DataHeader h, ReceivedDisk disk, ReadOnlySpan<byte> body)
    {
        var data = h.Encoding == DataEncoding.Raw ? body : disk.Decoded((int)h.Length);
        var bs = (int)disk.Offer.BlockSize;
        for (var o = 0; o + bs <= data.Length; o += bs)
            _seeds!.AddReceived(_seedFiles[h.Disk], (long)h.Offset + o, data.Slice(o, bs));
    }

    private ReceivedDisk Disk(ushort index) =>
        index < _disks.Count ? _disks[index] : throw new ProtocolException($"frame for disk {index}, but only {_disks.Count} were offered");

    private async Task<Frame?> ReadAsync(CancellationToken ct)
    {
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(ct, _failed.Token);
        idle.CancelAfter(options.IdleTimeout);
        return await _reader.ReadAsync(idle.Token);
    }

    /// <summary>
    /// fsync every image (after any flush under way: a failed one is reported here, never hidden by a
    /// later fsync that succeeds because Linux reports a writeback error only once), then the state
    /// files. If a state file cannot be written, those already marked are put back: nothing committed.
    /// </summary>
    private void Commit()
    {
        lock (_syncLock)
        {
            if (_fault != null) throw _fault;
            try
            {
                foreach (var d in _disks) d.Sync(StoragePoint.CommitSync);
            }
            catch (ReceiverException e)
            {
                _fault = e;
                throw;
            }
        }
        var before = _disks.Select(d => d.Status).ToList();
        for (var i = 0; i < _disks.Count; i++)
        {
            try
            {
                _disks[i].MarkCommitted();
            }
            catch (ReceiverException)
            {
                // the failed one may have renamed before its directory fsync failed: put it back too
                for (var j = 0; j <= i; j++)
                    if (!_disks[j].Restore(before[j]))
                        log.Warning($"disk {_disks[j].Name}: could not put its state file back to {before[j]} after the failed commit");
                throw;
            }
        }
    }

    /// <summary>
    /// The return trip: each gate map (the destination shim's) now counts writes from this hand-over on:
    /// cleared here unless the final set did it (gate mode: the VM may be running and writing already), and
    /// its cookie names the generation just committed. Best effort: a failure costs a later return its base only.
    /// </summary>
    private void MarkReturnable()
    {
        foreach (var d in _disks)
        {
            if (d.Gate == null || d.DiskLineage == null) continue;
            try
            {
                if (!d.Final) d.Gate.ClearWritten();
                d.Gate.MarkReturnable(d.DiskLineage, d.Generation);
            }
            catch (BlockMigrateException e)
            {
                log.Warning($"disk {d.Name}: could not mark its gate map for a return trip: {e.Message}");
            }
        }
    }

    /// <summary>Frame <paramref name="seq"/> wrote to an image (before it is marked processed): the next flush must fsync.</summary>
    private void Wrote(ulong seq) => Interlocked.Exchange(ref _lastWrite, (long)seq);

    private long _lastWrite; // the highest sequence number of a frame that wrote to an image (Interlocked)

    private void Processed(ulong seq)
    {
        Interlocked.Exchange(ref _processed, (long)seq);
        if (_flushSignal.CurrentCount == 0) _flushSignal.Release();
    }

    /// <summary>Acknowledges (cumulatively) the highest sequence number whose frames are fsynced.</summary>
    private async Task AckLoopAsync(CancellationToken ct)
    {
        long sent = 0;
        while (!ct.IsCancellationRequested)
        {
            await _ackSignal.WaitAsync(ct);
            var seq = Interlocked.Read(ref _durable);
            if (seq <= sent) continue;
            await _writer.WriteAsync(FrameType.Ack, new AckMessage((ulong)seq).Encode(), default, ct);
            sent = seq;
        }
    }

    /// <summary>
    /// Makes written frames durable, then lets the ack task acknowledge them. Group commit: each round
    /// fsyncs every image once and covers every frame processed before it began; frames that arrive
    /// during it wait for the next round, so fsyncs follow the rate of the disk, not of the frames.
    /// A failed fsync fails the session (nothing after the last good round is ever acknowledged).
    /// </summary>
    private async Task FlushLoopAsync(CancellationToken ct)
    {
        long flushed = 0;
        while (!ct.IsCancellationRequested)
        {
            await _flushSignal.WaitAsync(ct);
            var written = Interlocked.Read(ref _processed);
            if (written <= flushed) continue;
            // Only frames that wrote nothing to an image since the last fsync (the final set: its record is
            // fsynced on its own, its gate marks live in shared memory): durable as they are, no fsync. Read after
            // _processed: a frame marks its write before it is marked processed, so one covered by `written` shows.
            var needsSync = Interlocked.Read(ref _lastWrite) > flushed;
            ReceivedDisk[] disks;
            lock (_disks) disks = _disks.ToArray();
            lock (_syncLock)
            {
                if (_fault != null || _committed) return;
                try
                {
                    if (needsSync)
                        foreach (var d in disks) d.Sync(StoragePoint.FlushSync);
                }
                catch (ReceiverException e)
                {
                    _fault = e;
                    _failed.Cancel(); // the frame reader stops; RunAsync sends the Error frame
                    return;
                }
            }
            flushed = written;
            Interlocked.Exchange(ref _durable, written);
            if (_ackSignal.CurrentCount == 0) _ackSignal.Release();
        }
    }

    private async Task TrySendErrorAsync(string message)
    {
        try
        {
            using var t = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            await _writer.WriteAsync(FrameType.Error, Encoding.UTF8.GetBytes(message), default, t.Token);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException or NotSupportedException) { }
    }
}
