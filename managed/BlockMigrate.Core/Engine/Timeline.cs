namespace BlockMigrate.Engine;

/// <summary>
/// One migration over time, for <c>migrate --timeline FILE.svg</c> and the JSON report's <c>timeline</c>:
/// samples every <see cref="TimelineSampler.Every"/> of the link's bytes per second split into disk (the
/// engine's socket counter) and memory (the hypervisor's own counter; null where it reports none), the
/// throttle on the guest's writes and the phase; the dirty blocks each round took; when each phase began;
/// and the marks (<see cref="TimelineMarks"/>). Every time is in seconds since the migration began
/// (<see cref="Start"/>).
/// </summary>
public sealed record Timeline(
    DateTimeOffset Start,
    IReadOnlyList<TimelineSample> Samples,
    IReadOnlyList<TimelineRound> Rounds,
    IReadOnlyList<TimelinePhase> Phases,
    IReadOnlyList<TimelineMark> Marks)
{
    /// <summary>The time of the mark <paramref name="name"/>, or null when it did not happen.</summary>
    public double? At(string name) => Marks.FirstOrDefault(m => m.Name == name) is { Name: not null } m ? m.T : null;

    /// <summary>
    /// The span to shade: the guest's pause (STOP to RESUME) when the hypervisor reported both; otherwise
    /// (no guest, or no RESUME time) STOP to the hand-over, the disks' part of the switchover. Null before a switchover.
    /// </summary>
    public (double From, double To, bool GuestPause)? Pause =>
        At(TimelineMarks.Stop) is not { } stop ? null
        : At(TimelineMarks.Resume) is { } resume ? (stop, Math.Max(stop, resume), true)
        : At(TimelineMarks.HandOver) is { } handOver ? (stop, Math.Max(stop, handOver), false)
        : null;

    /// <summary>The last time anything was recorded.</summary>
    public double End => Math.Max(Samples.Count > 0 ? Samples[^1].T : 0, Marks.Count > 0 ? Marks.Max(m => m.T) : 0);

    /// <summary>Whether the hypervisor reported its memory bytes at all (none and xen do not).</summary>
    public bool HasMemory => Samples.Any(s => s.MemoryBytesPerSecond != null);
}

/// <param name="T">Seconds since the start.</param>
/// <param name="DiskBytesPerSecond">Bytes per second the engine put on its socket (blocks and control), over <see cref="TimelineSampler.Window"/>.</param>
/// <param name="MemoryBytesPerSecond">Memory bytes per second the hypervisor sent, over the same window; null where it reports none.</param>
/// <param name="ThrottleBytesPerSecond">The cap on the guest's writes (0: not throttled).</param>
public readonly record struct TimelineSample(double T, double DiskBytesPerSecond, double? MemoryBytesPerSecond, ulong ThrottleBytesPerSecond, MigrationPhase Phase);

/// <summary>A round of the disk copy (0: the bulk copy) began at <paramref name="T"/>, taking <paramref name="DirtyBlocks"/> blocks.</summary>
public readonly record struct TimelineRound(int Round, double T, ulong DirtyBlocks, long DirtyBytes);

public readonly record struct TimelinePhase(MigrationPhase Phase, double T);

public readonly record struct TimelineMark(string Name, double T);

/// <summary>The marks a timeline can have.</summary>
public static class TimelineMarks
{
    /// <summary>The source VM stopped: the hypervisor's own event time (QEMU's STOP) where it reports one, else when it called the switchover.</summary>
    public const string Stop = "STOP";
    /// <summary>The point of no return: the destination owns the disks and the VM may resume there.</summary>
    public const string HandOver = "hand-over";
    /// <summary>The destination VM runs (QEMU's RESUME event); only where the hypervisor reports it.</summary>
    public const string Resume = "RESUME";
    /// <summary>Every final block written and fsynced at the destination.</summary>
    public const string Commit = "commit";

    public static readonly IReadOnlyList<string> All = [Stop, HandOver, Resume, Commit];
}
