using System.Text.Json;
using BlockMigrate.Engine;
using BlockMigrate.Files;
using NLog;

namespace BlockMigrate.Cli.Status;

/// <summary>
/// The running migration's own status file, PID.json in <see cref="StatusDirectory"/>: rewritten on every
/// progress event (at most ~2 a second) and removed on Dispose. Writing never fails the migration: a
/// directory that cannot be written is logged at debug level and the file skipped.
/// </summary>
public sealed class StatusFile : IDisposable
{
    private static readonly Logger Log = LogManager.GetLogger("migrate");
    private readonly object _lock = new();  // guards _status and the writes
    private readonly TrustedDirectory _dir;
    private readonly string _name, _path;
    private MigrationStatus _status;
    private bool _disposed;

    private StatusFile(TrustedDirectory dir, MigrationStatus status)
    {
        _dir = dir;
        _name = $"{status.Pid}.json";
        _path = dir.PathOf(_name);
        _status = status;
        Write();
    }

    /// <summary>Starts publishing; null when no status directory is writable.</summary>
    public static StatusFile? TryCreate(string to, IEnumerable<string> disks, string hypervisor)
    {
        var refusals = new List<string>();
        var dir = StatusDirectory.ForWriting(refusals);
        if (dir is null)
        {
            Log.Debug($"no writable status directory ({string.Join("; ", refusals)}); 'blockmigrate status' will not see this migration");
            return null;
        }
        var now = DateTimeOffset.UtcNow;
        return new StatusFile(dir, new MigrationStatus
        {
            Pid = Environment.ProcessId, PidStartTicks = StatusDirectory.StartTicks(Environment.ProcessId), To = to, Disks = disks.ToList(), Hypervisor = hypervisor, StartedAt = now, UpdatedAt = now,
        });
    }

    public void OnProgress(MigrationProgress p) => Update(s => s with
    {
        Phase = p.Phase.ToString().ToLowerInvariant(),
        Round = p.Round,
        RoundBytesDone = p.RoundBytesDone,
        RoundBytesTotal = p.RoundBytesTotal,
        Percent = p.RoundBytesTotal > 0 && p.Phase is MigrationPhase.BulkCopy or MigrationPhase.DirtyRounds
            ? Math.Round(100.0 * Math.Min(p.RoundBytesDone, p.RoundBytesTotal) / p.RoundBytesTotal, 1) : null,
        WireBytesPerSecond = Math.Round(p.WireBytesPerSecond),
        DirtyBlocks = p.DirtyBlocks,
        DirtyBytes = p.DirtyBytes,
        BlocksFromSeeds = p.BlocksFromSeeds,
        BlocksSent = p.BlocksSent,
        ThrottleBytesPerSecond = p.ThrottleBytesPerSecond,
        EtaSeconds = p.Eta?.TotalSeconds is { } e ? Math.Round(e, 1) : null,
        ElapsedSeconds = Math.Round(p.Elapsed.TotalSeconds, 1),
        ReturnBaseBlocks = p.ReturnBaseBlocks,
    });

    /// <summary>The network redirection step (after the commit the phase becomes "network").</summary>
    public void OnNetwork(string phase, string? detail) => Update(s => s with { Phase = phase, Network = detail });

    private void Update(Func<MigrationStatus, MigrationStatus> change)
    {
        lock (_lock)
        {
            if (_disposed) return;
            _status = change(_status) with { UpdatedAt = DateTimeOffset.UtcNow };
            Write();
        }
    }

    private void Write()
    {
        try
        {
            // 0644: 'blockmigrate status' may be run by any user
            _dir.WriteAtomically(_name, JsonSerializer.SerializeToUtf8Bytes(_status, StatusJsonContext.Default.MigrationStatus),
                mode: UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.Debug($"status file {_path}: {e.Message}");
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            try { _dir.Delete(_name); }
            catch (IOException) { }
            _dir.Dispose();
        }
    }
}
