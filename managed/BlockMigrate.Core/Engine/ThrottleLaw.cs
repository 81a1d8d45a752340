namespace BlockMigrate.Engine;

/// <summary>
/// When and how hard to slow the guest's writes (the shim's token bucket), after a round that did not
/// fit the downtime target. No I/O: the caller (Migration.Throttle.cs) reads the maps and sets the cap.
/// <list type="bullet">
/// <item>The guest dirties blocks at ≥ 80% of the drain rate: the copy cannot converge on its own.</item>
/// <item>First cap: half the drain rate, divided by the write amplification seen (a 4 KiB write dirties a whole block).</item>
/// <item>Every further round that still does not fit halves the cap; never below 4 KiB/s.</item>
/// </list>
/// </summary>
internal static class ThrottleLaw
{
    public const ulong Floor = 4096;

    /// <summary>A new cap and the amplification it assumed.</summary>
    public readonly record struct Decision(ulong Cap, double Amplification);

    /// <summary>Guest bytes written per second over a round, from the maps' bytes_written before and after it.</summary>
    public static double WriteRate(ulong writtenBefore, ulong writtenNow, TimeSpan roundTime) =>
        (writtenNow - writtenBefore) / Math.Max(roundTime.TotalSeconds, 1e-3);

    /// <summary>
    /// The cap after a round that did not fit, or null to leave <paramref name="current"/> (0 = off) as it is.
    /// <paramref name="dirtyRate"/>: dirty-block bytes per second; <paramref name="writeRate"/>: guest bytes
    /// written per second; <paramref name="drainRate"/>: dirty-block bytes sent per second.
    /// </summary>
    public static Decision? Next(ulong current, double dirtyRate, double writeRate, double drainRate)
    {
        if (current == 0 && dirtyRate < 0.8 * drainRate) return null;
        var amplification = writeRate > 0 ? Math.Max(1, dirtyRate / writeRate) : 1;
        var target = current == 0
            ? (ulong)(0.5 * drainRate / amplification)
            : current / 2;
        target = Math.Max(target, Floor);
        return target == current ? null : new Decision(target, amplification);
    }
}
