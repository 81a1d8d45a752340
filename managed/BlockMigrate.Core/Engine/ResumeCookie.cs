using System.Security.Cryptography;
using System.Text;

namespace BlockMigrate.Engine;

/// <summary>
/// What a map's 32-byte cookie says about its bits (resume identity):
/// <code>
///   0..15  lineage: names the copy at the destination that the bits are relative to
///  16..27  identity: SHA-256(peer key fingerprint, disk name, image size, block size), first 12 bytes
///  28..30  0
///  31      state: 0 none, 1 a migration is running (bits may be out with it), 2 resumable,
///          3 handed over: the destination owns the VM, the final blocks not yet acknowledged are out,
///          4 returnable (set by a receiver on its gate map at the commit): 0..15 is the disk lineage,
///            16..23 the generation (little-endian) of the hand-over; the bits are every block the VM
///            wrote since (the return trip, docs/DESIGN.md)
/// </code>
/// A run that dies without giving its bits back leaves state 1: the next run recovers them from the
/// outstanding record, or copies afresh. State 3 is never copied afresh: a re-run only finishes the
/// hand-over (the map stays frozen, the source VM never runs again).
/// </summary>
public sealed record ResumeCookie(byte[] Lineage, byte[] Identity, CookieState State)
{
    public static byte[] IdentityOf(string peer, string disk, ulong size, uint blockSize) =>
        SHA256.HashData(Encoding.UTF8.GetBytes($"blockmigrate-resume-v1\n{peer}\n{disk}\n{size}\n{blockSize}"))[..12];

    public static byte[] NewLineage() => RandomNumberGenerator.GetBytes(16);

    public static string NewLineageHex() => Convert.ToHexString(NewLineage()).ToLowerInvariant();

    public byte[] Encode()
    {
        var c = new byte[32];
        Lineage.CopyTo(c, 0);
        Identity.CopyTo(c, 16);
        c[31] = (byte)State;
        return c;
    }

    public static ResumeCookie Decode(byte[] c) => new(c[..16], c[16..28], (CookieState)c[31]);

    /// <summary>True when this cookie lets a run to the peer of <paramref name="identity"/> continue from the map's bits.</summary>
    public bool AllowsResume(byte[] identity) => State is CookieState.Resumable or CookieState.HandedOver && Identity.AsSpan().SequenceEqual(identity);

    public string LineageHex => Convert.ToHexString(Lineage).ToLowerInvariant();

    /// <summary>The cookie a receiver puts on its gate map at the commit: the map's bits from then on are "written since generation <paramref name="generation"/> of <paramref name="diskLineageHex"/>".</summary>
    public static ResumeCookie Returnable(string diskLineageHex, ulong generation)
    {
        var identity = new byte[12];
        BitConverter.TryWriteBytes(identity, generation);
        return new ResumeCookie(Convert.FromHexString(diskLineageHex), identity, CookieState.Returnable);
    }

    /// <summary>For a <see cref="CookieState.Returnable"/> cookie: the generation its bits are relative to.</summary>
    public ulong ReturnGeneration => BitConverter.ToUInt64(Identity, 0);
}

/// <summary>Byte 31 of the cookie (the values are on disk: never renumber). A byte outside these is kept
/// as read and allows nothing (<see cref="ResumeCookie.AllowsResume"/> is false for it).</summary>
public enum CookieState : byte
{
    None = 0,
    /// <summary>A migration is running: bits may be out with it (the outstanding record has them).</summary>
    Running = 1,
    Resumable = 2,
    /// <summary>The destination owns the VM; the final blocks not yet acknowledged are out.</summary>
    HandedOver = 3,
    /// <summary>A destination's map since the commit: bits = written since the generation in bytes 16..23.</summary>
    Returnable = 4,
}
