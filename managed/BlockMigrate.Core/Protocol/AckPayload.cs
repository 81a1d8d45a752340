using System.Buffers.Binary;

namespace BlockMigrate.Protocol;

/// <summary>The payload of an Ack frame: u64 little-endian, the highest sequence number written (cumulative).</summary>
public static class AckPayload
{
    public const int Size = 8;

    public static byte[] Encode(ulong sequence)
    {
        var b = new byte[Size];
        BinaryPrimitives.WriteUInt64LittleEndian(b, sequence);
        return b;
    }

    public static ulong Decode(ReadOnlySpan<byte> payload) =>
        payload.Length == Size
            ? BinaryPrimitives.ReadUInt64LittleEndian(payload)
            : throw new ProtocolException($"ack frame of {payload.Length} bytes (expected {Size})");
}
