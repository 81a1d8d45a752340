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
///          3 handed over: the destination owns the VM, the final blocks not yet acknowledged are out
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
}
