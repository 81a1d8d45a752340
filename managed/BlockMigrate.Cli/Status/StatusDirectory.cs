// Where running migrations publish their status: $BLOCKMIGRATE_RUN_DIR/migrations when set (tests),
// else /run/blockmigrate/migrations, or /tmp/blockmigrate-UID/migrations when /run is not writable
// (a migration run by an unprivileged user).  One file per process, PID.json, written atomically
// (temporary file + rename) so a reader never sees half a file.  The writer (often root) uses a
// directory only when it is owned by root or itself and not writable by group or others, and
// writes through that directory's descriptor with O_NOFOLLOW and create-exclusive temporary files
// (TrustedDirectory): whoever made /tmp/blockmigrate-0 first cannot make root write elsewhere.
using System.Text.Json;
using BlockMigrate.Files;

namespace BlockMigrate.Cli.Status;

public static class StatusDirectory
{
    public const string EnvironmentVariable = "BLOCKMIGRATE_RUN_DIR";

    /// <summary>Where a reader looks, in order.</summary>
    public static IReadOnlyList<string> Candidates()
    {
        if (Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } dir)
            return [Path.Combine(dir, "migrations")];
        return ["/run/blockmigrate/migrations", Path.Combine(Path.GetTempPath(), $"blockmigrate-{Uid()}", "migrations")];
    }

    /// <summary>
    /// The first candidate that exists or can be made, passes the owner and mode checks and is writable,
    /// opened; null if none is (<paramref name="refusals"/> says why each was not used).
    /// </summary>
    public static TrustedDirectory? ForWriting(List<string>? refusals = null)
    {
        foreach (var dir in Candidates())
        {
            TrustedDirectory? opened = null;
            try
            {
                if (OperatingSystem.IsWindows()) return null;
                Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
                                               UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
                opened = TrustedDirectory.Open(dir, serviceUser: false);
                var probe = $".probe-{Environment.ProcessId}";
                opened.WriteAtomically(probe, []);
                opened.Delete(probe);
                return opened;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                opened?.Dispose();
                refusals?.Add(e.Message);
            }
        }
        return null;
    }

    /// <summary>The status of every migration whose process is alive; files of dead processes are removed.</summary>
    public static List<MigrationStatus> ReadLive()
    {
        var live = new List<MigrationStatus>();
        foreach (var dir in Candidates())
        {
            if (!Directory.Exists(dir)) continue;
            // read only a directory that only root or this user can write (no symlink, owner and mode
            // checked, as for writing): anything in it was put there by a trusted writer
            try
            {
                using var trusted = TrustedDirectory.Open(dir, serviceUser: false);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue;
            }
            foreach (var file in Directory.EnumerateFiles(dir, "*.json"))
            {
                if (!int.TryParse(Path.GetFileNameWithoutExtension(file), out var pid)) continue;
                if (!IsAlive(pid))
                {
                    TryDelete(file);
                    continue;
                }
                try
                {
                    if (JsonSerializer.Deserialize(File.ReadAllText(file), StatusJsonContext.Default.MigrationStatus) is not { } s) continue;
                    if (s.PidStartTicks is { } ticks && StartTicks(pid) is { } now && now != ticks)
                    {
                        TryDelete(file); // the PID was reused by another blockmigrate
                        continue;
                    }
                    live.Add(s);
                }
                catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException) { }
            }
        }
        return live.OrderBy(s => s.StartedAt).ToList();
    }

    /// <summary>A process with this PID exists and is a blockmigrate (the PID was not reused by something else).</summary>
    public static bool IsAlive(int pid)
    {
        try
        {
            var cmdline = File.ReadAllText($"/proc/{pid}/cmdline");
            return cmdline.Contains("blockmigrate", StringComparison.Ordinal);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>Field 22 of /proc/PID/stat (start time, clock ticks after boot); null if unreadable.</summary>
    public static ulong? StartTicks(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            // the command name (field 2) is in parentheses and may hold spaces: count from the last ')'
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return fields.Length > 19 && ulong.TryParse(fields[19], out var t) ? t : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    internal static void TryDelete(string file)
    {
        try { File.Delete(file); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    private static string Uid()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("Uid:", StringComparison.Ordinal))
                    return line.Split('\t', StringSplitOptions.RemoveEmptyEntries)[1];
        }
        catch (IOException) { }
        return Environment.UserName;
    }
}
