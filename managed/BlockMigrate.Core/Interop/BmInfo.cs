using System.Runtime.InteropServices;

namespace BlockMigrate.Interop;

/// <summary>
/// Mirror of <c>struct bm_info</c>. Its size and every field offset are checked against
/// bm_info_size()/bm_info_offset() by DirtyMapLayoutTests.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct BmInfo
{
    public uint Version;
    public uint BlockSize;
    public ulong ImageSize;
    public ulong Blocks;
    public ulong BitmapWords;
    public uint State;
    public uint Reserved;
    public ulong ThrottleBps;
    public ulong Writes;
    public ulong BytesWritten;
    public ulong ThrottledNs;
    public ulong FrozenNs;
    public ulong GatedNs;
    public ulong Inflight;
    public ulong OwnerPid;
    public ulong DirtyBlocks;
    public ulong GatedBlocks;

    /// <summary>C field name for each C# field, in declaration order (for the layout test).</summary>
    internal static readonly (string CName, string CsName)[] Fields =
    [
        ("version", nameof(Version)), ("block_size", nameof(BlockSize)), ("image_size", nameof(ImageSize)),
        ("blocks", nameof(Blocks)), ("bitmap_words", nameof(BitmapWords)), ("state", nameof(State)),
        ("throttle_bps", nameof(ThrottleBps)), ("writes", nameof(Writes)),
        ("bytes_written", nameof(BytesWritten)), ("throttled_ns", nameof(ThrottledNs)),
        ("frozen_ns", nameof(FrozenNs)), ("gated_ns", nameof(GatedNs)), ("inflight", nameof(Inflight)),
        ("owner_pid", nameof(OwnerPid)), ("dirty_blocks", nameof(DirtyBlocks)), ("gated_blocks", nameof(GatedBlocks)),
    ];
}
