using System.Buffers.Binary;

namespace BlockMigrate.Protocol;

/// <summary>
/// An Ack frame's payload: u64 little-endian, the highest sequence number of the source's frames that
/// the receiver has processed and made durable (fsynced) — cumulative: every frame up to it is on disk.
/// </summary>
public readonly record struct AckMessage(ulong Sequence)
{
    public const int Size = 8;

    public byte[] Encode()
    {
        var b = new byte[Size];
        BinaryPrimitives.WriteUInt64LittleEndian(b, Sequence);
        return b;
    }

    public static AckMessage Decode(ReadOnlySpan<byte> payload) =>
        payload.Length == Size
            ? new AckMessage(BinaryPrimitives.ReadUInt64LittleEndian(payload))
            : throw new ProtocolException($"ack frame of {payload.Length} bytes (an ack is {Size})");
}
