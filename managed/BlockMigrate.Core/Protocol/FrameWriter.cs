namespace BlockMigrate.Protocol;

/// <summary>
/// Writes frames to one direction of a connection. Safe to call from several tasks: frames are
/// numbered and written whole under one lock, so numbers on the wire are always in order.
/// </summary>
public sealed class FrameWriter(Stream stream)
{
    private readonly SemaphoreSlim _lock = new(1, 1);
    private ulong _next = 1; // under _lock; read with Interlocked

    /// <summary>The sequence number of the last frame begun (0: none yet).</summary>
    public ulong LastSequence => Interlocked.Read(ref _next) - 1;

    /// <summary>Writes one frame (payload = <paramref name="head"/> then <paramref name="body"/>); returns its sequence number.</summary>
    public async Task<ulong> WriteAsync(FrameType type, ReadOnlyMemory<byte> head, ReadOnlyMemory<byte> body = default,
        CancellationToken cancellationToken = default)
    {
        var length = head.Length + body.Length;
        if (length > FrameFormat.MaxPayload) throw new ArgumentException($"frame payload {length} over the limit");
        // one buffer, one write: one TLS record per frame. Pooled: it is ours alone from Rent to Return,
        // and the stream has let go of it once WriteAsync completed (SslStream encrypts into its own).
        var total = FrameFormat.HeaderSize + length;
        var rented = System.Buffers.ArrayPool<byte>.Shared.Rent(total);
        try
        {
            var buffer = rented.AsMemory(0, total);
            head.CopyTo(buffer[FrameFormat.HeaderSize..]);
            body.CopyTo(buffer[(FrameFormat.HeaderSize + head.Length)..]);
            await _lock.WaitAsync(cancellationToken);
            try
            {
                var seq = Interlocked.Increment(ref _next) - 1;
                FrameFormat.WriteHeader(buffer.Span, type, seq, buffer.Span[FrameFormat.HeaderSize..]);
                await stream.WriteAsync(buffer, cancellationToken);
                await stream.FlushAsync(cancellationToken);
                return seq;
            }
            finally
            {
                _lock.Release();
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(rented);
        }
    }

    public Task<ulong> WriteAsync(FrameType type, CancellationToken cancellationToken = default) =>
        WriteAsync(type, ReadOnlyMemory<byte>.Empty, default, cancellationToken);
}
