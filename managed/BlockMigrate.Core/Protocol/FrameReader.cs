using System.Buffers;
using System.Buffers.Binary;

namespace BlockMigrate.Protocol;

/// <summary>
/// Reads frames from one direction of a connection and checks each completely (magic, length bound,
/// CRC32C, sequence) before anyone sees its payload: a damaged frame is never acted on.
/// </summary>
public sealed class FrameReader(Stream stream)
{
    private readonly byte[] _header = new byte[FrameFormat.HeaderSize];
    private ulong _expected = 1;

    /// <summary>The next frame, or null when the peer closed the connection cleanly between frames.</summary>
    public async Task<Frame?> ReadAsync(CancellationToken cancellationToken)
    {
        var got = await stream.ReadAtLeastAsync(_header, _header.Length, throwOnEndOfStream: false, cancellationToken);
        if (got == 0) return null;
        if (got < _header.Length) throw new ProtocolException($"truncated frame header ({got} of {_header.Length} bytes)");
        if (BinaryPrimitives.ReadUInt32LittleEndian(_header) != FrameFormat.Magic)
            throw new ProtocolException("bad frame magic (not a BlockMigrate peer, or a corrupt stream)");
        var type = (FrameType)_header[4];
        var flags = _header[5];
        var sequence = BinaryPrimitives.ReadUInt64LittleEndian(_header.AsSpan(8));
        var length = BinaryPrimitives.ReadUInt32LittleEndian(_header.AsSpan(16));
        var crc = BinaryPrimitives.ReadUInt32LittleEndian(_header.AsSpan(20));
        if (length > FrameFormat.MaxPayload)
            throw new ProtocolException($"oversized frame ({length} bytes, limit {FrameFormat.MaxPayload})");
        // the payload goes into a pooled buffer that the returned frame owns (see Frame); a frame that fails a check gives it back here
        var buffer = ArrayPool<byte>.Shared.Rent((int)length);
        var frame = Frame.Pooled(type, sequence, buffer, (int)length);
        try
        {
            var payload = buffer.AsMemory(0, (int)length);
            got = await stream.ReadAtLeastAsync(payload, payload.Length, throwOnEndOfStream: false, cancellationToken);
            if (got < payload.Length) throw new ProtocolException($"truncated frame (payload {got} of {length} bytes)");
            if (FrameFormat.Checksum(_header.AsSpan(0, 20), payload.Span) != crc)
                throw new ProtocolException($"frame {sequence} failed its checksum (corrupt data on the link)");
            if (flags != 0 || !Enum.IsDefined(type))
                throw new ProtocolException($"frame {sequence} has an unknown type {(byte)type} or flags {flags}");
            if (sequence != _expected)
                throw new ProtocolException($"frame out of sequence: got {sequence}, expected {_expected}");
            _expected++;
            return frame;
        }
        catch
        {
            frame.Dispose();
            throw;
        }
    }

    /// <summary>The next frame; the peer closing here is an error naming what was awaited.</summary>
    public async Task<Frame> ReadRequiredAsync(string awaiting, CancellationToken cancellationToken) =>
        await ReadAsync(cancellationToken) ?? throw new ProtocolException($"peer closed the connection while we awaited {awaiting}");
}
