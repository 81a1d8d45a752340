using System.Text.RegularExpressions;

namespace BlockMigrate.TestSupport;

/// <summary>
/// A guest's serial console written by QEMU to a file (<c>-chardev file</c>). Polling the file is
/// reliable where a pipe is not: pipes through tr/grep buffer the console.
/// </summary>
public sealed partial class SerialLog(string path)
{
    public string Path { get; } = path;

    public string Text()
    {
        try
        {
            using var f = new FileStream(Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            using var r = new StreamReader(f);
            return r.ReadToEnd();
        }
        catch (FileNotFoundException)
        {
            return "";
        }
    }

    /// <summary>The highest <c>PROGRESS seq=N</c> the guest printed, or -1.</summary>
    public long LastProgress()
    {
        long last = -1;
        foreach (Match m in Progress().Matches(Text()))
            last = Math.Max(last, long.Parse(m.Groups[1].Value));
        return last;
    }

    /// <summary>Waits for <paramref name="pattern"/> to appear; returns the match.</summary>
    public async Task<Match> WaitForAsync(string pattern, TimeSpan timeout)
    {
        var rx = new Regex(pattern);
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var m = rx.Match(Text());
            if (m.Success)
                return m;
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"'{pattern}' did not appear in {Path} within {timeout.TotalSeconds:0} s; tail: {Tail()}");
            await Task.Delay(100);
        }
    }

    /// <summary>Waits until the guest printed a progress line beyond <paramref name="seq"/>; returns the new value.</summary>
    public async Task<long> WaitForProgressBeyondAsync(long seq, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var last = LastProgress();
            if (last > seq)
                return last;
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"guest progress stayed at {last} (wanted > {seq}) in {Path}; tail: {Tail()}");
            await Task.Delay(100);
        }
    }

    public string Tail(int chars = 400)
    {
        var t = Text();
        return t.Length <= chars ? t : t[^chars..];
    }

    [GeneratedRegex(@"PROGRESS seq=(\d+)")]
    private static partial Regex Progress();
}
