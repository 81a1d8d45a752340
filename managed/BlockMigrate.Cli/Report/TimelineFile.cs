using BlockMigrate.Engine;

namespace BlockMigrate.Cli.Report;

/// <summary><c>--timeline FILE.svg</c>: checked before the migration starts, written once it has committed.</summary>
public static class TimelineFile
{
    /// <summary>The setting's parser: an absolute path whose directory exists and which is not a directory.</summary>
    public static string Parse(string text)
    {
        if (string.IsNullOrWhiteSpace(text) || text.Contains('\0')) throw new FormatException("expected a file name such as migration.svg");
        var full = Path.GetFullPath(text);
        if (Directory.Exists(full)) throw new FormatException("is a directory; expected a file name such as migration.svg");
        var dir = Path.GetDirectoryName(full);
        if (dir == null || !Directory.Exists(dir)) throw new FormatException($"no directory {dir}");
        return full;
    }

    /// <summary>
    /// Writes the picture of <paramref name="report"/>'s timeline: to a new file of a random name beside
    /// <paramref name="path"/> (created exclusively: a planted file or link there is not followed), then
    /// renamed over <paramref name="path"/>, so a reader never sees half a picture.
    /// </summary>
    public static void Write(string path, MigrationReport report, string target)
    {
        if (report.Timeline is not { } t) return;
        var paused = report.HypervisorDetails?.GuestDowntime is { } g ? $", guest paused {g.TotalMilliseconds:0} ms" : "";
        var title = $"{string.Join(", ", report.Disks)} to {target}: {report.Hypervisor}, {report.SwitchoverName} switchover, " +
                    $"{report.TotalSeconds:0.0} s{paused}";
        var svg = TimelineSvg.Render(t, title);
        var temp = Path.Combine(Path.GetDirectoryName(path)!, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var f = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
            using (var w = new StreamWriter(f))
                w.Write(svg);
            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw new BlockMigrateException($"--timeline {path}: {e.Message}");
        }
    }
}
