using System.Buffers;

namespace BlockMigrate.Protocol;

/// <summary>
/// One frame as read from the wire: its type, its sequence number and its checked payload.
/// <para>
/// Ownership: a frame from <see cref="FrameReader"/> holds a buffer rented from <see cref="ArrayPool{T}.Shared"/>
/// (data frames are up to 2 MiB) and gives it back at <see cref="Dispose"/>. Whoever reads the frame owns
/// it: <c>using var frame = await reader.ReadAsync(ct);</c>, and nothing may keep <see cref="Span"/>
/// past that (copy what must outlive it, or use <see cref="Payload"/>, a copy). After Dispose,
/// <see cref="Span"/> throws; a frame never disposed is merely not returned to the pool.
/// </para>
/// </summary>
public sealed class Frame : IDisposable
{
    private byte[]? _buffer;
    private readonly bool _pooled;
    private readonly int _length;

    /// <summary>A frame over <paramref name="payload"/> (not pooled: the array is the caller's).</summary>
    public Frame(FrameType type, ulong sequence, byte[] payload)
        : this(type, sequence, payload, payload.Length, pooled: false)
    {
    }

    private Frame(FrameType type, ulong sequence, byte[] buffer, int length, bool pooled)
    {
        Type = type;
        Sequence = sequence;
        _buffer = buffer;
        _length = length;
        _pooled = pooled;
    }

    /// <summary>A frame whose payload is the first <paramref name="length"/> bytes of <paramref name="rented"/>, which it gives back to the pool at Dispose.</summary>
    internal static Frame Pooled(FrameType type, ulong sequence, byte[] rented, int length) => new(type, sequence, rented, length, pooled: true);

    public FrameType Type { get; }
    public ulong Sequence { get; }
    public int Length => _length;

    /// <summary>The payload, valid until <see cref="Dispose"/>.</summary>
    public ReadOnlySpan<byte> Span => (Volatile.Read(ref _buffer) ?? throw new ObjectDisposedException(nameof(Frame), "the frame's buffer was given back")).AsSpan(0, _length);

    /// <summary>A copy of the payload, the caller's to keep.</summary>
    public byte[] Payload => Span.ToArray();

    public void Dispose()
    {
        var buffer = Interlocked.Exchange(ref _buffer, null);
        if (buffer != null && _pooled) ArrayPool<byte>.Shared.Return(buffer);
    }
}
