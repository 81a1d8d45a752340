namespace BlockMigrate.Engine;

/// <summary>Who owns the VM and the disks; moves only forward (<see cref="MigrationState"/>).</summary>
internal enum Custody
{
    /// <summary>The source: any failure gives everything back (Migration.Abort.cs).</summary>
    Source,
    /// <summary>Commit mode, for an instant: the receiver committed the final set; the hand-over follows.</summary>
    Committed,
    /// <summary>Handed over (the point of no return), the final blocks not all committed yet: gate mode, or a re-run finishing a hand-over.</summary>
    HandedOver,
    /// <summary>Handed over and committed: the destination holds every block.</summary>
    HandedOverCommitted,
}

/// <summary>How this run switches over; decided once, by the handshake.</summary>
internal enum SwitchoverPlan
{
    Undecided,
    /// <summary>The destination VM resumes after the commit (<see cref="SwitchoverMode.Commit"/>).</summary>
    Commit,
    /// <summary>The destination VM resumes once the final set is gated (<see cref="SwitchoverMode.Gate"/>).</summary>
    Gate,
    /// <summary>This run finishes an earlier run's hand-over: only the blocks that were out are sent.</summary>
    Finish,
}

/// <summary>
/// The state of one <see cref="Migration"/>: the phase shown to the user, the custody of the VM and the
/// switchover plan, with every legal transition in this one class (an illegal one throws
/// <see cref="InvalidOperationException"/>: a bug, never a peer's doing). Written by the main task,
/// the hypervisor's switchover callback and the gate mode's final-data task, read by the progress
/// timer: every access takes the lock.
/// <code>
///   phase:   Connecting → BulkCopy → DirtyRounds → Memory → Switchover → (FinalBlocks | Verifying) → Done
///            Connecting → Switchover → Done                                (plan Finish)
///            any but Done → Aborting                                       (custody Source or Committed only)
///   custody: Source → Committed → HandedOverCommitted                      (plan Commit)
///            Source → HandedOver → HandedOverCommitted                     (plan Gate; plan Finish from the handshake)
///   plan:    Undecided → Commit | Gate | Finish                            (once)
/// </code>
/// </summary>
internal sealed class MigrationState
{
    private readonly object _lock = new();
    private MigrationPhase _phase = MigrationPhase.Connecting;
    private Custody _custody = Custody.Source;
    private SwitchoverPlan _plan = SwitchoverPlan.Undecided;

    public MigrationPhase Phase { get { lock (_lock) return _phase; } }
    public Custody Custody { get { lock (_lock) return _custody; } }
    public SwitchoverPlan Plan { get { lock (_lock) return _plan; } }

    /// <summary>Past the point of no return: the destination VM may run; nothing is given back.</summary>
    public bool IsHandedOver => Custody is Custody.HandedOver or Custody.HandedOverCommitted;

    /// <summary>The receiver wrote, fsynced and recorded every final block.</summary>
    public bool IsCommitted => Custody is Custody.Committed or Custody.HandedOverCommitted;

    public void Enter(MigrationPhase next)
    {
        lock (_lock)
        {
            if (!IsLegal(_phase, next, _custody)) throw Illegal("phase", _phase, next);
            _phase = next;
        }
    }

    /// <summary>The Committed frame arrived.</summary>
    public void Commit() => Move(Custody.Committed);

    /// <summary>The point of no return.</summary>
    public void HandOver() => Move(Custody.HandedOver);

    public void Decide(SwitchoverPlan plan)
    {
        lock (_lock)
        {
            if (_plan != SwitchoverPlan.Undecided || plan == SwitchoverPlan.Undecided) throw Illegal("plan", _plan, plan);
            _plan = plan;
        }
    }

    private void Move(Custody step)
    {
        lock (_lock)
        {
            var next = Next(_custody, step) ?? throw Illegal("custody", _custody, step);
            _custody = next;
        }
    }

    /// <summary>The custody after <paramref name="step"/> (Committed or HandedOver) from <paramref name="from"/>; null if illegal.</summary>
    public static Custody? Next(Custody from, Custody step) => (from, step) switch
    {
        (Custody.Source, Custody.Committed) => Custody.Committed,
        (Custody.Source, Custody.HandedOver) => Custody.HandedOver,
        (Custody.Committed, Custody.HandedOver) => Custody.HandedOverCommitted,
        (Custody.HandedOver, Custody.Committed) => Custody.HandedOverCommitted,
        _ => null,
    };

    public static bool IsLegal(MigrationPhase from, MigrationPhase to, Custody custody) => (from, to) switch
    {
        (MigrationPhase.Done or MigrationPhase.Aborting, _) => false,
        (_, MigrationPhase.Aborting) => custody is Custody.Source or Custody.Committed,
        (MigrationPhase.Connecting, MigrationPhase.Connecting or MigrationPhase.BulkCopy or MigrationPhase.Switchover) => true,
        (MigrationPhase.BulkCopy, MigrationPhase.DirtyRounds) => true,
        (MigrationPhase.DirtyRounds, MigrationPhase.Memory) => true,
        (MigrationPhase.Memory, MigrationPhase.Switchover) => true,
        (MigrationPhase.Switchover, MigrationPhase.FinalBlocks or MigrationPhase.Verifying or MigrationPhase.Done) => true,
        (MigrationPhase.FinalBlocks or MigrationPhase.Verifying, MigrationPhase.Done) => true,
        _ => false,
    };

    private static InvalidOperationException Illegal<T>(string what, T from, T to) =>
        new($"internal error: illegal {what} transition {from} → {to}");
}
