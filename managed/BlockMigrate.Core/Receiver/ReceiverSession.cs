using System.Text;
using BlockMigrate.Protocol;
using BlockMigrate.Transport;
using Microsoft.Win32.SafeHandles;

namespace BlockMigrate.Receiver;

/// <summary>
/// One source's migration, from the receiver's side: handshake, then frames in order: data is written
/// (pwrite, or a punched hole for zeros) and acknowledged cumulatively by a separate task, so acks flow
/// back while the next frames are read; the final set marks gated blocks stale; Commit fsyncs every image
/// and records the commit, then answers Committed. Any failure is sent to the source as one line.
/// </summary>
internal sealed class ReceiverSession(SecureChannel channel, ReceiverOptions options, SafeFileHandle dir, ISet<string> busy, Action<string> log)
{
    private readonly FrameReader _reader = new(channel.Stream);
    private readonly FrameWriter _writer = new(channel.Stream);
    private readonly List<ReceivedDisk> _disks = [];
    private readonly SemaphoreSlim _ackSignal = new(0);
    private long _processed;   // highest sequence number written (Interlocked)
    private bool _committed;

    public IReadOnlyList<string> DiskNames => _disks.Select(d => d.Name).ToList();

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
            var message = e switch
            {
                OperationCanceledException when !ct.IsCancellationRequested => $"no frame from the source for {options.IdleTimeout.TotalSeconds:0} s",
                OperationCanceledException => "receiver shutting down",
                IOException io => $"link to the source failed: {io.Message}",
                _ => e.Message,
            };
            log($"migration from {channel.Peer} failed: {message}");
            if (e is not IOException)
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
            catch (Exception) { /* reported by the commit's own fsync, if it matters */ }
            foreach (var d in _disks)
            {
                if (!_committed)
                {
                    try
                    {
                        d.Sync(); // acknowledged blocks stay a consistent base for a resume
                    }
                    catch (IOException) { }
                    ReleaseOrHold(d);
                }
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
            log($"disk {d.Name}: {held} blocks of the final set had not landed; the gate keeps holding them (the destination VM, if it runs, waits on them): re-run the source's migrate to finish");
        }
        catch (BlockMigrateException e)
        {
            log($"disk {d.Name}: gate: {e.Message}");
        }
    }

    private async Task HandshakeAsync(CancellationToken ct)
    {
        var hello = ProtocolJson.Decode(await ReadAsync(ct) ?? throw new ReceiverException("source closed the connection before its hello"),
            FrameType.Hello, ProtocolJson.Default.HelloMessage);
        if (hello.Version != HelloMessage.CurrentVersion)
            throw new ReceiverException($"protocol version {hello.Version} not supported (this receiver speaks {HelloMessage.CurrentVersion})");
        if (hello.Disks.Count is 0 or > 64) throw new ReceiverException($"refused a migration of {hello.Disks.Count} disks");
        var answers = new List<DiskAnswer>();
        foreach (var offer in hello.Disks)
        {
            DiskName.Check(offer.Name);
            lock (busy)
                if (!busy.Add(offer.Name)) throw new ReceiverException($"disk {offer.Name} is being received from another source right now");
            try
            {
                var d = ReceivedDisk.Open(dir, options.ImageDir, offer, channel.Peer, options.GateMapDir);
                lock (_disks) _disks.Add(d);
                answers.Add(new DiskAnswer(offer.Name, d.Resume, d.Gate != null));
                log($"disk {offer.Name}: {(d.Finishing ? "finishing the hand-over of" : d.Resume ? "resuming" : "receiving")} {offer.Size} bytes into {Path.Combine(options.ImageDir, DiskName.ImageFile(offer.Name))}{(d.Gate != null ? " (gated)" : "")}");
            }
            catch
            {
                lock (busy) busy.Remove(offer.Name);
                throw;
            }
        }
        await _writer.WriteAsync(FrameType.Welcome, ProtocolJson.Encode(new WelcomeMessage(answers, [WelcomeMessage.Zstd]), ProtocolJson.Default.WelcomeMessage), default, ct);
    }

    private async Task FramesAsync(CancellationToken ct)
    {
        while (true)
        {
            var frame = await ReadAsync(ct);
            if (frame == null)
            {
                if (!_committed) log($"source {channel.Peer} closed the connection before the commit");
                return;
            }
            switch (frame.Type)
            {
                case FrameType.Data:
                {
                    var h = DataHeader.Read(frame.Payload);
                    var disk = Disk(h.Disk);
                    var (first, count) = disk.Write(h, frame.Payload.AsSpan(DataHeader.Size));
                    if (disk.Final) disk.Gate?.Landed(first, count);
                    Processed(frame.Sequence);
                    break;
                }
                case FrameType.FinalSet:
                {
                    var set = FinalSet.Decode(frame.Payload);
                    var disk = Disk(set.Disk);
                    disk.Final = true;
                    // finishing: the gate already holds exactly what is missing; marking again could
                    // re-gate a block the running destination VM has written since
                    if (!disk.Finishing) disk.Gate?.MarkStale(set.Ranges);
                    Processed(frame.Sequence);
                    break;
                }
                case FrameType.Commit:
                    foreach (var d in _disks) d.Sync();
                    foreach (var d in _disks) d.MarkCommitted();
                    _committed = true;
                    foreach (var d in _disks) d.Gate?.ReleaseAll();
                    await _writer.WriteAsync(FrameType.Committed, ct);
                    log($"committed {string.Join(", ", _disks.Select(d => d.Name))} from {channel.Peer}");
                    foreach (var d in _disks.Where(d => d.Finishing))
                        log($"disk {d.Name}: hand-over finished; {d.SkippedBlocks} blocks sent again were not written (already there, and the VM may have written them since)");
                    break;
                case FrameType.Verify:
                    if (!_committed) throw new ProtocolException("verify before commit");
                    var hashes = await Task.Run(() => _disks.Select(d => d.Hash()).ToList(), ct);
                    await _writer.WriteAsync(FrameType.VerifyResult, ProtocolJson.Encode(new VerifyResultMessage(hashes), ProtocolJson.Default.VerifyResultMessage), default, ct);
                    break;
                case FrameType.Error:
                    log($"source {channel.Peer} gave up: {Encoding.UTF8.GetString(frame.Payload)}");
                    return;
                default:
                    throw new ProtocolException($"unexpected {frame.Type} frame from the source");
            }
        }
    }

    private ReceivedDisk Disk(ushort index) =>
        index < _disks.Count ? _disks[index] : throw new ProtocolException($"frame for disk {index}, but only {_disks.Count} were offered");

    private async Task<Frame?> ReadAsync(CancellationToken ct)
    {
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(ct);
        idle.CancelAfter(options.IdleTimeout);
        return await _reader.ReadAsync(idle.Token);
    }

    private void Processed(ulong seq)
    {
        Interlocked.Exchange(ref _processed, (long)seq);
        if (_ackSignal.CurrentCount == 0) _ackSignal.Release();
    }

    private async Task AckLoopAsync(CancellationToken ct)
    {
        long sent = 0;
        while (!ct.IsCancellationRequested)
        {
            await _ackSignal.WaitAsync(ct);
            var seq = Interlocked.Read(ref _processed);
            if (seq <= sent) continue;
            await _writer.WriteAsync(FrameType.Ack, AckPayload.Encode((ulong)seq), default, ct);
            sent = seq;
        }
    }

    /// <summary>
    /// Writes back what was written, once a second, while frames keep coming: the fsync at the commit
    /// (inside the downtime) then has only the last second's writes to flush, not the whole bulk copy.
    /// </summary>
    private async Task FlushLoopAsync(CancellationToken ct)
    {
        long flushed = 0;
        while (!ct.IsCancellationRequested)
        {
            await Task.Delay(TimeSpan.FromSeconds(1), ct);
            var written = Interlocked.Read(ref _processed);
            if (written == flushed || _committed) continue;
            flushed = written;
            ReceivedDisk[] disks;
            lock (_disks) disks = _disks.ToArray();
            foreach (var d in disks)
            {
                try
                {
                    d.Sync();
                }
                catch (Exception e) when (e is IOException or ObjectDisposedException) { }
            }
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
