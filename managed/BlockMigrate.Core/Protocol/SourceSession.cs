using BlockMigrate.Transport;

namespace BlockMigrate.Protocol;

/// <summary>What the receiver says to the source, dispatched by <see cref="SourceSession"/>'s read loop (one task).</summary>
internal interface ISourceSessionEvents
{
    /// <summary>Every frame up to <paramref name="sequence"/> is written and fsynced at the receiver (cumulative; never past what was sent).</summary>
    void Acked(ulong sequence);

    /// <summary>The receiver committed: every image fsynced and its state recorded.</summary>
    void Committed();

    /// <summary>The receiver's hashes (<see cref="FrameType.Verify"/>).</summary>
    void Verified(VerifyResultMessage result);

    /// <summary>The receiver's answer to a seed-hashes frame (before that frame's ack); throws <see cref="ProtocolException"/> if it answers nothing sent.</summary>
    void SeedAnswered(SeedAnswer answer);

        /// <summary>The connection is over: an Error frame, a bad frame, a closed or failed link, or <see cref="SourceSession.DisposeAsync"/>. Called once; nothing follows.</summary>
    void Failed(BlockMigrateException reason);
}

/// <summary>
/// One migration from the source's side of the connection, mirroring the receiver's ReceiverSession:
/// the handshake (Hello out, Welcome in, checked against the offers), then frames out in order
/// (<see cref="SendAsync"/>, safe from several tasks) and, on one task, every frame in: Ack (decoded by
/// <see cref="AckMessage"/>: 8 bytes little-endian, never past the last frame sent), Committed,
/// VerifyResult, Error. The engine's flow control (window, outstanding blocks) lives in BlockSender;
/// the engine's decisions about the disks in Migration.Connect.cs.
/// </summary>
internal sealed class SourceSession(Stream stream) : IAsyncDisposable
{
    private readonly FrameWriter _writer = new(stream);
    private readonly FrameReader _reader = new(stream);
    private readonly CancellationTokenSource _stop = new();
    private Task? _readLoop;

    /// <summary>The sequence number of the last frame begun (0: none yet).</summary>
    public ulong LastSequence => _writer.LastSequence;

    /// <summary>
    /// Sends the Hello and reads the Welcome, checked against <paramref name="hello"/>'s offers; returns it
    /// with the time between the two (a round trip plus the receiver's setup: an upper bound).
    /// </summary>
    public async Task<(WelcomeMessage Welcome, TimeSpan RoundTrip)> GreetAsync(HelloMessage hello, CancellationToken ct)
    {
        var sent = System.Diagnostics.Stopwatch.GetTimestamp();
        await _writer.WriteAsync(FrameType.Hello, ProtocolJson.Encode(hello, ProtocolJson.Default.HelloMessage), default, ct);
        using var frame = await _reader.ReadRequiredAsync("the receiver's welcome", ct);
        var welcome = MessageChecks.Check(ProtocolJson.Decode(frame, FrameType.Welcome, ProtocolJson.Default.WelcomeMessage), hello.Disks);
        return (welcome, System.Diagnostics.Stopwatch.GetElapsedTime(sent));
    }

    /// <summary>One frame (payload = <paramref name="head"/> then <paramref name="body"/>); returns its sequence number.</summary>
    public Task<ulong> SendAsync(FrameType type, ReadOnlyMemory<byte> head, ReadOnlyMemory<byte> body, CancellationToken ct) =>
        _writer.WriteAsync(type, head, body, ct);

    /// <summary>Starts reading the receiver's frames after the handshake; each goes to <paramref name="events"/>.</summary>
    public void Start(ISourceSessionEvents events) => _readLoop = Task.Run(() => ReadLoopAsync(events));

    private async Task ReadLoopAsync(ISourceSessionEvents events)
    {
        try
        {
            while (true)
            {
                using var frame = await _reader.ReadAsync(_stop.Token) ?? throw new TransportException("the receiver closed the connection");
                switch (frame.Type)
                {
                    case FrameType.Ack:
                        var ack = AckMessage.Decode(frame.Span).Sequence;
                        if (ack > _writer.LastSequence)
                            throw new ProtocolException($"the receiver acknowledged frame {ack}, but only {_writer.LastSequence} were sent");
                        events.Acked(ack);
                        break;
                    case FrameType.SeedAnswer:
                        var answer = SeedAnswer.Decode(frame.Span);
                        if (answer.Sequence > _writer.LastSequence)
                            throw new ProtocolException($"the receiver answered seed-hashes frame {answer.Sequence}, but only {_writer.LastSequence} were sent");
                        events.SeedAnswered(answer);
                        break;
                    case FrameType.Committed:
                        events.Committed();
                        break;
                    case FrameType.VerifyResult:
                        events.Verified(ProtocolJson.Decode(frame, FrameType.VerifyResult, ProtocolJson.Default.VerifyResultMessage));
                        break;
                    case FrameType.Error:
                        throw new RemoteFailureException($"receiver failed: {PeerText.Clean(frame.Span)} (the source map still holds every block it did not acknowledge; a re-run resumes)");
                    default:
                        throw new ProtocolException($"unexpected {frame.Type} frame from the receiver");
                }
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
            events.Failed(new TransportException("connection closed"));
        }
        catch (BlockMigrateException e)
        {
            events.Failed(e);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or System.Security.Authentication.AuthenticationException)
        {
            events.Failed(new TransportException($"link to the receiver failed: {e.Message}"));
        }
    }

    /// <summary>Stops the read loop (the stream is the caller's to close).</summary>
    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        if (_readLoop != null)
            try
            {
                await _readLoop.WaitAsync(TimeSpan.FromSeconds(2));
            }
            catch (TimeoutException) { }
        _stop.Dispose();
    }
}
