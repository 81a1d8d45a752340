using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using BlockMigrate.Engine;
using BlockMigrate.Maps;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>The processes of a whole-VM migration that the fault matrix kills.</summary>
public enum Victim
{
    /// <summary><c>blockmigrate migrate</c> at the source.</summary>
    Migrate,
    /// <summary><c>blockmigrate receive</c> at the destination.</summary>
    Receiver,
    /// <summary>nbdkit + our filter serving the source VM's disk.</summary>
    SourceShim,
    /// <summary>nbdkit + our filter in gate mode serving the destination VM's disk.</summary>
    DestinationShim,
    /// <summary>The destination QEMU (<c>-incoming defer -S</c>).</summary>
    DestinationQemu,
}

/// <summary>Where the VM runs once the fault and the admin's re-run are over.</summary>
public enum Side
{
    Source,
    Destination,
    /// <summary>Nowhere: the VM crashed after the point of no return; its disk is whole at the destination (cold boot there).</summary>
    Nowhere,
}

/// <summary>
/// Two hosts on one machine for the fault matrix (<see cref="FaultMatrixTests"/>), set up as an admin
/// would and small enough that every phase lasts long enough to be hit:
/// <list type="bullet">
/// <item>source: a 12 MiB image (the first 4 MiB written round-robin by the TCG test guest, 8 MiB of random
/// data standing for the rest of the disk), the source shim on a fixed socket path (so a killed shim
/// is restarted where QEMU reconnects), the source QEMU on it;</item>
/// <item>destination: <c>blockmigrate receive --once</c> behind <c>tools/wanem.py</c> (16 Mbit/s, 100 ms each
/// way: the bulk copy takes seconds, the switchover at least one round trip), the destination shim in
/// gate mode on the image being received, a destination QEMU with <c>-incoming defer -S</c>.</item>
/// </list>
/// Every process is killed by PID on Dispose. <see cref="KillAt"/> kills a victim with SIGKILL the
/// moment <c>migrate</c> logs the phase (<c>phase: NAME</c>), from the thread that reads that line.
/// </summary>
public sealed partial class FaultBed : ShimBed
{
    public const int GuestBlocks = 1024;
    public const long FillBytes = 8L << 20;
    public const long DiskBytes = GuestBlocks * (long)GuestDisk.BlockSize + FillBytes;
    private const string LinkRate = "16M", LinkDelayMs = "100";

    private readonly List<QemuGuest> _destinations = [];
    private int _runs;

    private FaultBed(TwoHostBed bed) : base(bed) { }

    /// <summary>The destination QEMU the next <see cref="StartMigrate"/> moves the VM to.</summary>
    public QemuGuest Destination => _destinations[^1];
    public IReadOnlyList<QemuGuest> Destinations => _destinations;
    public BackgroundProcess? Receiver { get; private set; }
    /// <summary>Every receiver started, in order (their logs go into the report).</summary>
    public List<BackgroundProcess> Receivers { get; } = [];
    public string ReceiverAddress { get; private set; } = "";
    private BackgroundProcess? _wan;

    /// <summary>The shims on fixed socket paths (a killed shim is restarted where QEMU reconnects).</summary>
    public static async Task<FaultBed> StartAsync(string tag) =>
        new(await TwoHostBed.StartAsync(new TwoHostBedOptions
        {
            DirTag = "fm-" + tag, DiskBytes = DiskBytes, FillOffset = DiskBytes - FillBytes, FillBytes = FillBytes,
            FixedSockets = true, GuestBlocks = GuestBlocks, BootTimeout = TimeSpan.FromSeconds(180),
            TeardownLog = line => TestContext.Out.WriteLine(line),
        }));

    /// <summary>(Re)starts the source shim on the same socket, image and map, as an admin would after it died.</summary>
    public void RestartSourceShim() => Bed.RestartSourceDisk();

    /// <summary>(Re)starts the destination shim (gate mode) on the same socket, image and gate map.</summary>
    public void RestartDestinationShim() => Bed.RestartDestinationDisk();

    /// <summary>A fresh destination QEMU (<c>-incoming defer -S</c>) on the destination shim.</summary>
    public QemuGuest StartDestination()
    {
        var d = Bed.StartDestination($"dst{_destinations.Count + 1}");
        _destinations.Add(d);
        return d;
    }

    /// <summary>A fresh <c>receive --once</c> and a WAN link in front of it; <see cref="ReceiverAddress"/> is the link's.</summary>
    public async Task StartReceiverAsync()
    {
        _wan?.Kill();
        var (r, port) = await Bed.StartReceiverAsync(TimeSpan.FromSeconds(60));
        Receiver = r;
        Receivers.Add(r);
        (_wan, ReceiverAddress) = await Bed.StartWanAsync($"127.0.0.1:{port}", LinkRate, LinkDelayMs);
    }

    /// <summary><c>blockmigrate migrate --hypervisor qemu</c> to the current receiver and destination QEMU, as an admin types it.</summary>
    public BackgroundProcess StartMigrate(params string[] extra)
    {
        var n = ++_runs;
        var args = new List<string>
        {
            "migrate", "--disk", $"vda={SourceImage}:{SourceMap}", "--to", ReceiverAddress, "--key", Keys.SourceKey,
            "--peer-fingerprint", Keys.ReceiverFingerprint, "--json", "--timeout", "400",
            "--hypervisor", "qemu", "--qmp-source", Source.QmpSocket, "--qmp-destination", Destination.QmpSocket,
            "--migration-uri", $"unix:{Dir[$"mig{n}.sock"]}", "--incoming-uri", $"unix:{Dir[$"mig{n}.sock"]}",
        };
        args.AddRange(extra);
        return Own(BackgroundProcess.Cli(args.ToArray()));
    }

    /// <summary>The PID of the victim now (its current incarnation).</summary>
    public int PidOf(Victim v, BackgroundProcess migrate) => v switch
    {
        Victim.Migrate => migrate.Pid,
        Victim.Receiver => Receiver!.Pid,
        Victim.SourceShim => SourceShim.Pid,
        Victim.DestinationShim => DestinationShim.Pid,
        Victim.DestinationQemu => Destination.Pid,
        _ => throw new ArgumentOutOfRangeException(nameof(v)),
    };

    /// <summary>
    /// SIGKILLs <paramref name="victim"/> when <paramref name="migrate"/> logs <c>phase: PHASE</c> (after
    /// <paramref name="after"/>, if given). Without a delay the kill is sent from the thread that reads the
    /// line, before <c>migrate</c> can log anything else. The task gives the migrate log up to the kill.
    /// </summary>
    public Task<string> KillAt(BackgroundProcess migrate, MigrationPhase phase, Victim victim, TimeSpan? after = null)
    {
        var done = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var wanted = $"phase: {phase}";
        var fired = 0;
        void Fire()
        {
            if (Interlocked.Exchange(ref fired, 1) == 1) return;
            if (after is { } delay)
                _ = Task.Run(async () =>
                {
                    await Task.Delay(delay);
                    Kill(victim, migrate, done);
                });
            else
                Kill(victim, migrate, done);
        }
        migrate.StderrLine += line =>
        {
            if (line.EndsWith(wanted, StringComparison.Ordinal)) Fire();
        };
        if (migrate.Stderr.Contains(wanted + "\n", StringComparison.Ordinal)) Fire(); // logged before we subscribed
        return done.Task;
    }

    private void Kill(Victim victim, BackgroundProcess migrate, TaskCompletionSource<string> done)
    {
        try
        {
            var pid = PidOf(victim, migrate);
            if (kill(pid, 9) != 0) throw new InvalidOperationException($"kill -9 {pid}: errno {Marshal.GetLastPInvokeError()}");
            done.TrySetResult(migrate.Stderr);
        }
        catch (Exception e)
        {
            done.TrySetException(e);
        }
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int signal);

    /// <summary>The state of the source map's resume cookie (<see cref="ResumeCookie"/>).</summary>
    public CookieState SourceCookieState()
    {
        using var map = DirtyMap.Open(SourceMap);
        return ResumeCookie.Decode(map.GetCookie()).State;
    }


    /// <summary>Everything the bed's processes logged, for a failed cell's message.</summary>
    public string Logs()
    {
        var s = new StringBuilder();
        for (var i = 0; i < Receivers.Count; i++) s.Append($"--- receiver {i + 1}:\n{Receivers[i].Stderr}");
        s.Append($"--- source shim:\n{SourceShim.Stderr}--- destination shim:\n{DestinationShim.Stderr}");
        s.Append($"--- source serial tail: {Source.Serial.Tail()}\n");
        foreach (var d in _destinations) s.Append($"--- {d.Options.Name} serial tail: {d.Serial.Tail()}\n");
        return s.ToString();
    }
}

/// <summary>
/// What the guest was told about its writes, from the serial logs of every QEMU it ran in, and the
/// check of a disk against it. The guest writes seq i to block i % N with O_DIRECT, prints
/// <c>WRITE-ERR seq=i</c> when the write failed and <c>PROGRESS seq=i</c> after write i (every 50th).
/// So write i was acknowledged if a PROGRESS at or after it was printed and no WRITE-ERR names it.
/// A failed write may or may not have reached the image (the guest was told nothing landed).
/// </summary>
public sealed partial class GuestWrites
{
    private readonly HashSet<long> _failed = [];

    public GuestWrites(IEnumerable<SerialLog> logs)
    {
        foreach (var log in logs)
        {
            var text = log.Text();
            foreach (Match m in WriteErr().Matches(text)) _failed.Add(long.Parse(m.Groups[1].Value));
            foreach (Match m in Progress().Matches(text))
            {
                var seq = long.Parse(m.Groups[1].Value);
                if (!_failed.Contains(seq)) LastAcknowledged = Math.Max(LastAcknowledged, seq);
            }
        }
    }

    /// <summary>The newest write the guest is known to have had acknowledged (a lower bound).</summary>
    public long LastAcknowledged { get; } = -1;

    public int Failed => _failed.Count;

    /// <summary>
    /// With S the newest record on the image: S ≥ <see cref="LastAcknowledged"/> (nothing acknowledged
    /// lost), and every block b holds the newest acknowledged seq ≤ S congruent to b, or a failed write
    /// newer than that (it may have landed): an older record is a lost or stale block.
    /// </summary>
    public GuestDiskReport Verify(string image, int blocks)
    {
        var seqs = new long[blocks];
        var problems = new List<string>();
        var buffer = new byte[GuestDisk.BlockSize];
        long max = -1;
        using (var f = new FileStream(image, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
            for (var b = 0; b < blocks; b++)
            {
                seqs[b] = -1;
                if (f.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false) < buffer.Length)
                {
                    problems.Add($"image ends at block {b}");
                    break;
                }
                if (buffer.AsSpan(0, 28).IndexOfAnyExcept((byte)0) < 0) continue;
                var text = Encoding.ASCII.GetString(buffer, 0, 28);
                var m = Record().Match(text);
                if (!m.Success || int.Parse(m.Groups[2].Value) != b)
                {
                    problems.Add($"block {b}: bad record '{text.TrimEnd('\n', '\0')}'");
                    continue;
                }
                seqs[b] = long.Parse(m.Groups[1].Value);
                max = Math.Max(max, seqs[b]);
            }
        if (max < LastAcknowledged)
            problems.Add($"newest record {max}, but write {LastAcknowledged} was acknowledged to the guest (lost writes)");
        for (var b = 0; b < blocks && problems.Count < 10; b++)
        {
            // newest acknowledged write to b at or below max; failed writes above it may have landed
            var expected = b > max ? -1 : max - ((max - b) % blocks);
            var maybe = new List<long>();
            while (expected >= 0 && _failed.Contains(expected))
            {
                maybe.Add(expected);
                expected -= blocks;
            }
            if (expected < 0) expected = -1;
            if (seqs[b] != expected && !maybe.Contains(seqs[b]))
                problems.Add($"block {b}: seq {seqs[b]}, expected {expected}{(maybe.Count > 0 ? $" (or failed {string.Join('/', maybe)})" : "")}");
        }
        return new GuestDiskReport(problems.Count == 0 && max >= 0, max, problems);
    }

    [GeneratedRegex(@"WRITE-ERR seq=(\d+)")]
    private static partial Regex WriteErr();

    [GeneratedRegex(@"PROGRESS seq=(\d+)")]
    private static partial Regex Progress();

    [GeneratedRegex(@"^SEQ (\d{10}) BLK (\d{8})\n$")]
    private static partial Regex Record();
}
