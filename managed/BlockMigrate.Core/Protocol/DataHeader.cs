using System.Buffers.Binary;

namespace BlockMigrate.Protocol;

/// <summary>
/// The 24-byte head of a data frame's payload, little-endian: u16 disk index, u8 encoding, u8 0,
/// u32 0, u64 byte offset, u64 byte length of the range (uncompressed). Raw and LZ4 ranges are at
/// most <see cref="MaxDataLength"/> bytes; zero ranges may be any length.
/// </summary>
public readonly record struct DataHeader(ushort Disk, DataEncoding Encoding, ulong Offset, ulong Length)
{
    public const int Size = 24;
    public const int MaxDataLength = 1 << 20;

    public void Write(Span<byte> b)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(b, Disk);
        b[2] = (byte)Encoding;
        b[3] = 0;
        BinaryPrimitives.WriteUInt32LittleEndian(b[4..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(b[8..], Offset);
        BinaryPrimitives.WriteUInt64LittleEndian(b[16..], Length);
    }

    public static DataHeader Read(ReadOnlySpan<byte> payload)
    {
        if (payload.Length < Size) throw new ProtocolException($"data frame too short ({payload.Length} bytes)");
        var h = new DataHeader(BinaryPrimitives.ReadUInt16LittleEndian(payload), (DataEncoding)payload[2],
            BinaryPrimitives.ReadUInt64LittleEndian(payload[8..]), BinaryPrimitives.ReadUInt64LittleEndian(payload[16..]));
        if (!Enum.IsDefined(h.Encoding)) throw new ProtocolException($"data frame with unknown encoding {(byte)h.Encoding}");
        if (h.Encoding != DataEncoding.Zero && h.Length > MaxDataLength)
            throw new ProtocolException($"data frame range of {h.Length} bytes over the limit");
        if (h.Encoding == DataEncoding.Raw && (ulong)(payload.Length - Size) != h.Length)
            throw new ProtocolException("raw data frame length does not match its range");
        return h;
    }
}
