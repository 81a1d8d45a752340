using System.Diagnostics;

namespace BlockMigrate.Engine.Tests;

/// <summary>The engine's rules that need no disk and no peer: state transitions, rates, the throttle law.</summary>
public class EngineRulesUnitTests
{
    // ---- MigrationState: every legal path, and what must throw ----

    [Test]
    public void Commit_mode_walks_its_phases_and_commits_before_the_hand_over()
    {
        var s = new MigrationState();
        s.Decide(SwitchoverPlan.Commit);
        foreach (var p in new[] { MigrationPhase.Connecting, MigrationPhase.BulkCopy, MigrationPhase.DirtyRounds, MigrationPhase.Memory, MigrationPhase.Switchover })
            s.Enter(p);
        s.Commit();
        Assert.That((s.Custody, s.IsCommitted, s.IsHandedOver), Is.EqualTo((Custody.Committed, true, false)));
        s.HandOver();
        s.Enter(MigrationPhase.Verifying);
        s.Enter(MigrationPhase.Done);
        Assert.That((s.Custody, s.IsCommitted, s.IsHandedOver, s.Phase), Is.EqualTo((Custody.HandedOverCommitted, true, true, MigrationPhase.Done)));
    }

    [Test]
    public void Gate_mode_hands_over_before_the_commit()
    {
        var s = new MigrationState();
        s.Decide(SwitchoverPlan.Gate);
        s.HandOver();
        Assert.That((s.IsHandedOver, s.IsCommitted), Is.EqualTo((true, false)));
        s.Commit();
        Assert.That(s.Custody, Is.EqualTo(Custody.HandedOverCommitted));
    }

    [Test]
    public void Finishing_goes_from_connecting_to_the_switchover()
    {
        var s = new MigrationState();
        s.HandOver(); // from the map's cookie, during the handshake
        s.Decide(SwitchoverPlan.Finish);
        s.Enter(MigrationPhase.Switchover);
        s.Commit();
        s.Enter(MigrationPhase.Done);
        Assert.That(s.Custody, Is.EqualTo(Custody.HandedOverCommitted));
    }

    [Test]
    public void Nothing_aborts_after_the_hand_over()
    {
        var s = new MigrationState();
        s.Enter(MigrationPhase.BulkCopy);
        s.HandOver();
        Assert.Throws<InvalidOperationException>(() => s.Enter(MigrationPhase.Aborting));
        Assert.That(s.Phase, Is.EqualTo(MigrationPhase.BulkCopy), "a refused transition changes nothing");
    }

    [Test]
    public void Illegal_transitions_throw()
    {
        var s = new MigrationState();
        Assert.Throws<InvalidOperationException>(() => s.Enter(MigrationPhase.Memory), "skipping the copy");
        s.Commit();
        Assert.Throws<InvalidOperationException>(() => s.Commit(), "a second commit");
        s.HandOver();
        Assert.Throws<InvalidOperationException>(() => s.HandOver(), "a second hand-over");
        s.Decide(SwitchoverPlan.Gate);
        Assert.Throws<InvalidOperationException>(() => s.Decide(SwitchoverPlan.Commit), "the plan is decided once");
        Assert.Throws<InvalidOperationException>(() => new MigrationState().Decide(SwitchoverPlan.Undecided));
    }

    [TestCase(MigrationPhase.Done)]
    [TestCase(MigrationPhase.Aborting)]
    public void Terminal_phases_stay(MigrationPhase terminal)
    {
        foreach (var next in Enum.GetValues<MigrationPhase>())
            Assert.That(MigrationState.IsLegal(terminal, next, Custody.Source), Is.False, $"{terminal} → {next}");
    }

    [Test]
    public void Aborting_is_legal_from_every_live_phase_before_the_hand_over_only()
    {
        foreach (var from in Enum.GetValues<MigrationPhase>().Where(p => p is not (MigrationPhase.Done or MigrationPhase.Aborting)))
        {
            Assert.That(MigrationState.IsLegal(from, MigrationPhase.Aborting, Custody.Source), Is.True, $"{from}");
            Assert.That(MigrationState.IsLegal(from, MigrationPhase.Aborting, Custody.Committed), Is.True, $"{from}, committed");
            Assert.That(MigrationState.IsLegal(from, MigrationPhase.Aborting, Custody.HandedOver), Is.False, $"{from}, handed over");
            Assert.That(MigrationState.IsLegal(from, MigrationPhase.Aborting, Custody.HandedOverCommitted), Is.False, $"{from}, done");
        }
    }

    // ---- DrainRate ----

    [Test]
    public void Drain_rate_is_the_socket_rate_over_the_compression_ratio()
    {
        var r = new DrainRate();
        r.Observe(new RoundStats(TimeSpan.FromSeconds(2), WireBytes: 10 << 20, DataBytes: 40 << 20, BlockBytes: 40 << 20, LinkWaitFraction: 0.9));
        Assert.That(r.WireRate, Is.EqualTo(5 << 20));
        Assert.That(r.BlockRate, Is.EqualTo(20 << 20), "4:1 compression drains 4 × the socket rate");
        Assert.That(r.LinkRate, Is.EqualTo(5 << 20), "a large round that waited on the link measures it");
    }

    [Test]
    public void Compression_credit_is_bounded()
    {
        var r = new DrainRate();
        r.Observe(new RoundStats(TimeSpan.FromSeconds(1), WireBytes: 1 << 20, DataBytes: 1000L << 20, BlockBytes: 1000L << 20, LinkWaitFraction: 0));
        Assert.That(r.BlockRate, Is.EqualTo(20 << 20), "at most 20 × (ratio clamped at 0.05)");
        Assert.That(r.LinkRate, Is.Null, "a round that did not wait on the link says nothing of it");
    }

    [Test]
    public void Small_rounds_do_not_overwrite_a_measured_rate()
    {
        var r = new DrainRate();
        r.Observe(new RoundStats(TimeSpan.FromSeconds(1), 8 << 20, 8 << 20, 8 << 20, 0));
        var (wire, block) = (r.WireRate, r.BlockRate);
        r.Observe(new RoundStats(TimeSpan.FromSeconds(1), 4096, 4096, 4096, 0));
        Assert.That((r.WireRate, r.BlockRate), Is.EqualTo((wire, block)));
    }

    [Test]
    public void A_zero_only_round_drains_at_its_block_rate()
    {
        var r = new DrainRate();
        r.Observe(new RoundStats(TimeSpan.FromSeconds(2), WireBytes: 4096, DataBytes: 0, BlockBytes: 64 << 20, LinkWaitFraction: 0));
        Assert.That(r.BlockRate, Is.EqualTo(32 << 20));
    }

    private static readonly SwitchoverCosts Commit1 = new(TimeSpan.FromMilliseconds(1), TimeSpan.FromMilliseconds(3), Disks: 1, Gate: false, Window: 32 << 20);

    [Test]
    public void Switchover_estimate_is_take_plus_drain_time_plus_ack_plus_records()
    {
        var r = new DrainRate();
        Assert.That(r.Switchover(1e9, Commit1).Total, Is.EqualTo(TimeSpan.FromMilliseconds(4)), "no rate yet: the ack and the record only");
        r.Observe(new RoundStats(TimeSpan.FromSeconds(1), 10 << 20, 10 << 20, 10 << 20, 0, Take: TimeSpan.FromMilliseconds(2)));
        var e = r.Switchover(5 << 20, Commit1);
        Assert.That((e.Take.TotalMilliseconds, e.Send.TotalMilliseconds, e.Tail.TotalMilliseconds, e.Records.TotalMilliseconds),
            Is.EqualTo((2.0, 500.0, 501.0, 3.0)), "no round ended with bytes in flight: one ack + the bytes at the rate acked bytes went");
        Assert.That(r.Switchover(5 << 20, Commit1 with { Disks = 3 }).Records, Is.EqualTo(TimeSpan.FromMilliseconds(9)), "one record per disk");
    }

    /// <summary>
    /// The demo's case (issue 11): a fast link, a receiver whose fsync dominates. The bulk round's last
    /// 8 MiB in flight took 41 ms to be acked (1 ms of it the ack's way): 5 ms per MiB. A 4 MiB final set
    /// then costs 20 ms of fsync on top of its 20 ms on the link; the old model (drain time + round trip)
    /// said 21 ms.
    /// </summary>
    [Test]
    public void Switchover_estimate_counts_the_receivers_fsync_of_the_final_set()
    {
        var r = new DrainRate();
        r.Observe(new RoundStats(TimeSpan.FromSeconds(0.5), 100 << 20, 100 << 20, 100 << 20, 0,
            Tail: TimeSpan.FromMilliseconds(41), TailWireBytes: 8 << 20, Take: TimeSpan.FromMilliseconds(0.5)));
        var e = r.Switchover(4 << 20, Commit1);
        Assert.That(e.Send.TotalMilliseconds, Is.EqualTo(20).Within(0.01));
        Assert.That(e.Tail.TotalMilliseconds, Is.EqualTo(1 + 20).Within(0.01), "one ack + 4 MiB × 5 ms/MiB of fsync");
        Assert.That(e.Total.TotalMilliseconds, Is.EqualTo(0.5 + 20 + 21 + 3).Within(0.01));
        Assert.That(r.Switchover(1L << 30, Commit1).Tail.TotalMilliseconds, Is.EqualTo(1 + 32 * 5).Within(0.01),
            "at most a window is in flight when the last frame goes out");
    }

    [Test]
    public void Gate_mode_hands_over_before_the_data_so_its_estimate_has_no_data_term()
    {
        var r = new DrainRate();
        r.Observe(new RoundStats(TimeSpan.FromSeconds(0.5), 100 << 20, 100 << 20, 100 << 20, 0,
            Tail: TimeSpan.FromMilliseconds(41), TailWireBytes: 8 << 20, Take: TimeSpan.FromMilliseconds(0.5)));
        var e = r.Switchover(4 << 20, Commit1 with { Gate = true });
        Assert.That(e.Total.TotalMilliseconds, Is.EqualTo(0.5 + 1 + 3).Within(0.01), "take + the final set's ack + the handed-over record");
    }

    [Test]
    public void Rounds_stop_when_the_estimate_fits_or_on_a_long_round_trip_when_what_they_can_shrink_fits()
    {
        TimeSpan Ms(double ms) => TimeSpan.FromMilliseconds(ms);
        var target = Ms(300);
        // a short round trip: the whole estimate must fit
        Assert.That(new SwitchoverEstimate(Ms(1), Ms(200), Ms(20), Ms(10)).Fits(Ms(31), target), Is.True);
        Assert.That(new SwitchoverEstimate(Ms(1), Ms(290), Ms(20), Ms(10)).Fits(Ms(31), target), Is.False);
        // a 200 ms round trip: ack + two records are 600 ms, over the target whatever the rounds do; the
        // rounds stop once the data they can shrink fits in the target on top of that (else they never stop)
        var floor = Ms(1 + 200 + 400);
        Assert.That(new SwitchoverEstimate(Ms(1), Ms(250), Ms(200), Ms(400)).Fits(floor, target), Is.True);
        Assert.That(new SwitchoverEstimate(Ms(1), Ms(350), Ms(200), Ms(400)).Fits(floor, target), Is.False);
    }

    /// <summary>
    /// The demo at 100 writes/s (issue 11): 29 final blocks predicted at 12 ms, measured 19 ms — the per-byte
    /// model priced their fsync at almost nothing and the time to read them through the shim at none. A round
    /// of a few blocks measures both: its tail (a journal commit however little is written) and its time before
    /// the tail beyond its bytes at the drain rate.
    /// </summary>
    [Test]
    public void A_small_final_set_pays_what_a_small_round_paid_to_start_and_to_fsync()
    {
        var r = new DrainRate();
        r.Observe(new RoundStats(TimeSpan.FromSeconds(0.5), 100 << 20, 100 << 20, 100 << 20, 0,
            Tail: TimeSpan.FromMilliseconds(41), TailWireBytes: 8 << 20, Take: TimeSpan.FromMilliseconds(0.5)));
        Assert.That(r.Startup, Is.EqualTo(TimeSpan.Zero).Within(TimeSpan.FromMilliseconds(0.01)), "a large round's time is its bytes");
        // 112 KiB of blocks, 48 KiB in flight at the end: 3 ms before the tail (0.55 ms of it bytes at 200 MiB/s), 4 ms tail
        r.Observe(new RoundStats(TimeSpan.FromMilliseconds(7), 48 << 10, 112 << 10, 112 << 10, 0,
            Tail: TimeSpan.FromMilliseconds(4), TailWireBytes: 48 << 10, Take: TimeSpan.FromMilliseconds(0.5)));
        Assert.That(r.SmallTail, Is.EqualTo(TimeSpan.FromMilliseconds(4)));
        var bytesTime = (112 << 10) / r.BlockRate;
        Assert.That(r.Startup.TotalMilliseconds, Is.EqualTo(3 - bytesTime * 1000).Within(0.01));
        var e = r.Switchover(116 << 10, Commit1);
        Assert.That(e.Send.TotalMilliseconds, Is.EqualTo(r.Startup.TotalMilliseconds + (116 << 10) / r.BlockRate * 1000).Within(0.01));
        Assert.That(e.Tail, Is.EqualTo(TimeSpan.FromMilliseconds(4)), "at least what a few blocks' fsync and ack took");
        Assert.That(r.Switchover(0, Commit1).Total, Is.EqualTo(TimeSpan.FromMilliseconds(0.5 + 1 + 3)), "an empty final set sends nothing and fsyncs nothing");
        Assert.That(r.Switchover(4 << 20, Commit1 with { Gate = true }).Tail, Is.EqualTo(TimeSpan.FromMilliseconds(1)),
            "gate mode: the final set writes nothing, its ack waits for no image fsync");
    }

    [Test]
    public void A_round_ending_with_little_in_flight_keeps_the_measured_fsync_cost()
    {
        var r = new DrainRate();
        r.Observe(new RoundStats(TimeSpan.FromSeconds(0.5), 100 << 20, 100 << 20, 100 << 20, 0, Tail: TimeSpan.FromMilliseconds(41), TailWireBytes: 8 << 20));
        r.Observe(new RoundStats(TimeSpan.FromMilliseconds(5), 4096, 4096, 4096, 0, Tail: TimeSpan.FromMilliseconds(1), TailWireBytes: 4096));
        Assert.That(r.Drain, Is.EqualTo((TimeSpan.FromMilliseconds(41), 8L << 20)));
    }

    // ---- SmoothedRate ----

    [Test]
    public void Socket_rate_is_sampled_at_most_every_quarter_second_and_smoothed()
    {
        var t0 = 1_000_000L;
        long At(double seconds) => t0 + (long)(seconds * Stopwatch.Frequency);
        var r = new SmoothedRate(t0);
        Assert.That(r.Sample(1000, At(0.1)), Is.Zero, "too soon: the last value (none yet)");
        Assert.That(r.Sample(1_000_000, At(1)), Is.EqualTo(1_000_000).Within(1e-6), "the first sample is taken whole");
        Assert.That(r.Sample(4_000_000, At(2)), Is.EqualTo(2_000_000).Within(1e-6), "then half old, half new");
        Assert.That(r.Sample(9_000_000, At(2.1)), Is.EqualTo(2_000_000).Within(1e-6), "too soon again");
    }

    // ---- ThrottleLaw ----

    [Test]
    public void No_throttle_while_the_guest_dirties_below_80_percent_of_the_drain()
    {
        Assert.That(ThrottleLaw.Next(0, dirtyRate: 79, writeRate: 79, drainRate: 100), Is.Null);
        Assert.That(ThrottleLaw.Next(0, dirtyRate: 80e6, writeRate: 80e6, drainRate: 100e6), Is.Not.Null);
    }

    [Test]
    public void First_cap_is_half_the_drain_over_the_amplification()
    {
        var d = ThrottleLaw.Next(0, dirtyRate: 160e6, writeRate: 10e6, drainRate: 100e6);
        Assert.That(d, Is.EqualTo(new ThrottleLaw.Decision(3_125_000, 16)));
        d = ThrottleLaw.Next(0, dirtyRate: 90e6, writeRate: 0, drainRate: 100e6);
        Assert.That(d, Is.EqualTo(new ThrottleLaw.Decision(50_000_000, 1)), "no writes seen: amplification 1");
    }

    [Test]
    public void Each_further_round_halves_the_cap_down_to_the_floor()
    {
        Assert.That(ThrottleLaw.Next(1_000_000, dirtyRate: 1, writeRate: 1, drainRate: 100e6)?.Cap, Is.EqualTo(500_000), "once on, any round that did not fit halves it");
        Assert.That(ThrottleLaw.Next(6000, 1, 1, 100e6)?.Cap, Is.EqualTo(ThrottleLaw.Floor));
        Assert.That(ThrottleLaw.Next(ThrottleLaw.Floor, 1, 1, 100e6), Is.Null, "at the floor: no change");
    }

    [Test]
    public void Write_rate_is_bytes_over_the_round_with_a_floor_on_time()
    {
        Assert.That(ThrottleLaw.WriteRate(1000, 3000, TimeSpan.FromSeconds(2)), Is.EqualTo(1000));
        Assert.That(ThrottleLaw.WriteRate(0, 1000, TimeSpan.Zero), Is.EqualTo(1_000_000).Within(1e-3));
    }
}
