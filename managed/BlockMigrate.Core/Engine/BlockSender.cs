using System.Buffers;
using System.Diagnostics;
using System.Text;
using BlockMigrate.Protocol;
using BlockMigrate.Transport;

namespace BlockMigrate.Engine;

/// <summary>
/// The socket stage of the pipeline: flow control over a <see cref="SourceSession"/>.
///
/// Sending: a frame waits for room in the window (bytes sent and not acknowledged), then for the
/// bandwidth cap, then goes out; its blocks are remembered under its sequence number.
/// What the session's read loop dispatches (its task): cumulative acks drop the blocks of every frame
/// up to the acked number from the disks' outstanding sets and open the window; Committed/VerifyResult
/// complete their awaiters; a failure (Error frame, closed connection, bad frame) fails everything at once.
/// </summary>
internal sealed class BlockSender : IAsyncDisposable, ISourceSessionEvents
{
    private readonly SourceSession _session;
    private readonly BandwidthLimit? _limit;
    private readonly long _window;
    private readonly TimeSpan _stallTimeout;
    private readonly object _lock = new();
    private readonly Queue<(ulong Seq, SourceDisk Disk, ulong First, ulong Blocks, int Bytes, SeedBatch? Seeds)> _inflight = new(); // _lock
    private readonly Queue<SeedBatch> _unanswered = new(); // _lock: seed-hashes frames sent (or being sent) and not answered yet, in order
    private long _seedBlocks;      // _lock: blocks written from seeds at the receiver and acknowledged (durable)
    private long _seedWireBytes;   // _lock: bytes of seed-hashes frames sent and of answers received
    private long _inflightBytes;   // _lock
    private ulong _acked;          // _lock: highest sequence number acknowledged
    private long _lastProgress = Stopwatch.GetTimestamp(); // _lock
    private TaskCompletionSource _progress = NewSignal(); // _lock: completed on every ack and on failure
    private Exception? _failure;   // _lock
    private ulong _probeSeq;       // _lock: a small frame sent onto an idle link, timed until its ack
    private long _probeSent;       // _lock
    private TimeSpan _minAckLatency = TimeSpan.MaxValue; // _lock: smallest send→ack time seen (≈ a round trip)
    private readonly TaskCompletionSource _committed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<VerifyResultMessage> _verified = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public BlockSender(SourceSession session, MigrationOptions options)
    {
        _session = session;
        _window = options.WindowBytes;
        _stallTimeout = options.StallTimeout;
        if (options.BandwidthBytesPerSecond is { } bps) _limit = new BandwidthLimit(bps);
    }

    public void Start() => _session.Start(this);

    /// <summary>Sends one data frame (returning its pooled buffer); waits for window room first.</summary>
    public async Task SendAsync(OutgoingFrame frame, CancellationToken cancellationToken)
    {
        try
        {
            LinkWait.Begin(); // until the frame is in the socket: window, cap, a full socket buffer
            await WaitAsync(() => _inflightBytes == 0 || _inflightBytes + frame.WireBytes <= _window, cancellationToken);
            if (_limit != null) await _limit.WaitAsync(frame.WireBytes, cancellationToken);
            var head = frame.Seeds == null ? new byte[DataHeader.Size] : [];
            if (frame.Seeds == null) frame.Header.Write(head);
            // registered before the write: the ack (or the answer) may arrive before WriteAsync returns
            lock (_lock)
            {
                if (_inflightBytes == 0) _lastProgress = Stopwatch.GetTimestamp();
                _inflightBytes += frame.WireBytes;
                if (frame.Seeds != null)
                {
                    _unanswered.Enqueue(frame.Seeds);
                    _seedWireBytes += frame.WireBytes;
                }
            }
            ulong seq;
            try
            {
                seq = await _session.SendAsync(frame.Seeds == null ? FrameType.Data : FrameType.SeedHashes, head, frame.Body, cancellationToken);
            }
            catch (IOException e)
            {
                throw Fail(new TransportException($"link to the receiver failed: {e.Message}"));
            }
            lock (_lock)
            {
                // small frames only: a big one's ack also waits for its own serialisation on a slow link
                if (_probeSeq == 0 && _inflight.Count == 0 && seq > _acked && frame.WireBytes <= 4096)
                {
                    _probeSeq = seq;
                    _probeSent = Stopwatch.GetTimestamp();
                }
                if (frame.Seeds is { } batch)
                {
                    batch.Sequence = seq;
                    if (batch.Answer != null && batch.Answer.Sequence != seq)
                        throw Fail(new ProtocolException($"the receiver answered seed-hashes frame {batch.Answer.Sequence} where frame {seq} was sent"));
                }
                if (seq <= _acked)
                {
                    _inflightBytes -= frame.WireBytes;
                    Acknowledge(frame.Disk, frame.FirstBlock, frame.Blocks, frame.Seeds, seq);
                }
                else _inflight.Enqueue((seq, frame.Disk, frame.FirstBlock, frame.Blocks, frame.WireBytes, frame.Seeds));
            }
        }
        finally
        {
            LinkWait.End();
            if (frame.Rented != null) ArrayPool<byte>.Shared.Return(frame.Rented);
        }
    }

    /// <summary>A control frame, in order with the data frames before it; returns its sequence number.</summary>
    public async Task<ulong> SendControlAsync(FrameType type, byte[] payload, CancellationToken cancellationToken)
    {
        ThrowIfFailed();
        try
        {
            return await _session.SendAsync(type, payload, default, cancellationToken);
        }
        catch (IOException e)
        {
            throw Fail(new TransportException($"link to the receiver failed: {e.Message}"));
        }
    }

    /// <summary>Bytes sent and not acknowledged yet.</summary>
    public long InflightBytes { get { lock (_lock) return _inflightBytes; } }

    /// <summary>Waits until every frame sent has been acknowledged.</summary>
    public async Task DrainAsync(CancellationToken cancellationToken)
    {
        LinkWait.Begin(); // waiting for the link to deliver
        try
        {
            await WaitAsync(() => _inflight.Count == 0 && _inflightBytes == 0, cancellationToken);
        }
        finally
        {
            LinkWait.End();
        }
    }

    /// <summary>Waits until the receiver has processed every frame up to <paramref name="sequence"/> (acks are cumulative).</summary>
    public Task WaitAckedAsync(ulong sequence, CancellationToken cancellationToken) => WaitAsync(() => _acked >= sequence, cancellationToken);

    public async Task WaitCommittedAsync(CancellationToken cancellationToken)
    {
        await WaitAsync(() => _committed.Task.IsCompleted, cancellationToken);
    }

    public async Task<VerifyResultMessage> WaitVerifiedAsync(CancellationToken cancellationToken)
    {
        await WaitAsync(() => _verified.Task.IsCompleted, cancellationToken, stallCheck: false);
        return await _verified.Task;
    }

    /// <summary>Time spent waiting for window room, the bandwidth cap, the socket or the last acks: the link, not the producer, was the bottleneck then.</summary>
    public WaitMeter LinkWait { get; } = new();

    /// <summary>The smallest time from sending a frame onto an idle link to its ack: about one round trip.</summary>
    public TimeSpan? MinAckLatency { get { lock (_lock) return _minAckLatency == TimeSpan.MaxValue ? null : _minAckLatency; } }

    private async Task WaitAsync(Func<bool> done, CancellationToken cancellationToken, bool stallCheck = true)
    {
        while (true)
        {
            Task signal;
            lock (_lock)
            {
                if (_failure != null) throw _failure;
                if (done()) return;
                if (stallCheck && _inflightBytes > 0 && Stopwatch.GetElapsedTime(_lastProgress) > _stallTimeout)
                    throw Fail(new TransportException($"no acknowledgement from the receiver for {_stallTimeout.TotalSeconds:0} s; the link is stalled"));
                signal = _progress.Task;
            }
            await Task.WhenAny(signal, Task.Delay(TimeSpan.FromMilliseconds(500), cancellationToken));
            cancellationToken.ThrowIfCancellationRequested();
        }
    }

    private void ThrowIfFailed()
    {
        lock (_lock)
            if (_failure != null) throw _failure;
    }

    private Exception Fail(Exception e)
    {
        lock (_lock)
        {
            _failure ??= e;
            Signal();
            return _failure;
        }
    }

    private void Signal()
    {
        var old = _progress;
        _progress = NewSignal();
        old.TrySetResult();
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    void ISourceSessionEvents.Committed()
    {
        _committed.TrySetResult();
        lock (_lock) Signal();
    }

    void ISourceSessionEvents.Verified(VerifyResultMessage result)
    {
        _verified.TrySetResult(result);
        lock (_lock) Signal();
    }

    void ISourceSessionEvents.Failed(BlockMigrateException reason) => Fail(reason);

    void ISourceSessionEvents.Acked(ulong seq)
    {
        lock (_lock)
        {
            if (seq > _acked) _acked = seq;
            if (_probeSeq != 0 && seq >= _probeSeq)
            {
                var latency = Stopwatch.GetElapsedTime(_probeSent);
                if (latency < _minAckLatency) _minAckLatency = latency;
                _probeSeq = 0;
            }
            while (_inflight.Count > 0 && _inflight.Peek().Seq <= seq)
            {
                var f = _inflight.Dequeue();
                _inflightBytes -= f.Bytes;
                Acknowledge(f.Disk, f.First, f.Blocks, f.Seeds, f.Seq);
            }
            _lastProgress = Stopwatch.GetTimestamp();
            Signal();
        }
    }

    /// <summary>
    /// An acknowledged frame's blocks are no longer ours to give back (_lock held): a data frame's range; a
    /// seed-hashes frame's blocks the receiver said it wrote (its answer comes before its ack, or the
    /// receiver is broken: the others stay outstanding until their data is acknowledged).
    /// </summary>
    private void Acknowledge(SourceDisk disk, ulong first, ulong blocks, SeedBatch? seeds, ulong seq)
    {
        if (seeds == null)
        {
            disk.Acknowledge(first, blocks);
            return;
        }
        if (seeds.Answer == null)
            throw Fail(new ProtocolException($"the receiver acknowledged seed-hashes frame {seq} without answering it"));
        foreach (var b in seeds.Answered(supplied: true))
        {
            disk.Acknowledge(b, 1);
            _seedBlocks++;
        }
    }

    /// <summary>Blocks the receiver wrote from its seeds, acknowledged (durable there).</summary>
    public long SeedBlocks { get { lock (_lock) return _seedBlocks; } }

    /// <summary>Bytes of the hash exchange on the wire so far: seed-hashes frames out, answers in (with their frame headers).</summary>
    public long SeedWireBytes { get { lock (_lock) return _seedWireBytes; } }

    void ISourceSessionEvents.SeedAnswered(SeedAnswer answer)
    {
        lock (_lock)
        {
            try
            {
                if (!_unanswered.TryDequeue(out var batch))
                    throw new ProtocolException($"the receiver answered seed-hashes frame {answer.Sequence}, but none awaits an answer");
                if (batch.Sequence != 0 && batch.Sequence != answer.Sequence)
                    throw new ProtocolException($"the receiver answered seed-hashes frame {answer.Sequence} where frame {batch.Sequence} awaits its answer");
                if (answer.Count != batch.Count)
                    throw new ProtocolException($"the receiver answered {answer.Count} blocks of seed-hashes frame {answer.Sequence}, which asked about {batch.Count}");
                batch.Answer = answer;
                _seedWireBytes += FrameFormat.HeaderSize + SeedAnswer.HeadSize + answer.Supplied.Length;
                Signal();
            }
            catch (ProtocolException e)
            {
                throw Fail(e);
            }
        }
    }

    /// <summary>Stops the session's read loop: every waiter fails from now on.</summary>
    public ValueTask DisposeAsync() => _session.DisposeAsync();
}
