using System.Buffers.Binary;
using System.Numerics;

namespace BlockMigrate.Protocol;

/// <summary>
/// The frame header, 24 bytes, little-endian:
/// <code>
///   0  u32 magic "BMF1"
///   4  u8  type        (FrameType)
///   5  u8  flags       (0)
///   6  u16 reserved    (0)
///   8  u64 sequence    (1, 2, 3 ... per direction; a gap or repeat is an error)
///  16  u32 length      (payload bytes, at most MaxPayload)
///  20  u32 crc32c      (over bytes 0..19 and the payload)
/// </code>
/// </summary>
public static class FrameFormat
{
    public const int HeaderSize = 24;
    public const uint Magic = 0x31464D42; // "BMF1" read little-endian
    /// <summary>Largest payload accepted: a data frame of 1 MiB with its header and slack for incompressible data.</summary>
    public const int MaxPayload = 2 << 20;

    public static void WriteHeader(Span<byte> h, FrameType type, ulong sequence, ReadOnlySpan<byte> payload)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(h, Magic);
        h[4] = (byte)type;
        h[5] = 0;
        BinaryPrimitives.WriteUInt16LittleEndian(h[6..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(h[8..], sequence);
        BinaryPrimitives.WriteUInt32LittleEndian(h[16..], (uint)payload.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(h[20..], Checksum(h[..20], payload));
    }

    public static uint Checksum(ReadOnlySpan<byte> header20, ReadOnlySpan<byte> payload) =>
        ~Crc32C(Crc32C(~0u, header20), payload) ;

    private static uint Crc32C(uint crc, ReadOnlySpan<byte> data)
    {
        var i = 0;
        for (; i + 8 <= data.Length; i += 8)
            crc = BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(data[i..]));
        for (; i < data.Length; i++)
            crc = BitOperations.Crc32C(crc, data[i]);
        return crc;
    }
}
