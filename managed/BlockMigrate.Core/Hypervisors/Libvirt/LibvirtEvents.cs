using System.Globalization;
using CliWrap;

namespace BlockMigrate.Hypervisors.Libvirt;

/// <summary>
/// <c>virsh event --loop --timestamp --event lifecycle</c> on one host, in the background, for the
/// guest's pause: libvirt's own timestamps of "Suspended Migrated" at the source and "Resumed" at the
/// destination (two hosts' clocks: keep them NTP-synchronised). Lines look like
/// <c>2026-12-02 16:32:05.733+0000: event 'lifecycle' for domain 'web': Suspended Migrated</c>.
/// </summary>
public sealed class LibvirtEvents : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _run;
    private readonly List<(DateTimeOffset At, string What)> _events = [];
    private readonly string _needle;
    private readonly Action<string, Exception>? _ignored;

    /// <param name="ignored">told of a failure that is not acted on (no events: the figures stay null)</param>
    public LibvirtEvents(Virsh virsh, string domain, Action<string, Exception>? ignored = null)
    {
        _ignored = ignored;
        _needle = $"for domain '{domain}': ";
        var cmd = virsh.Command(["event", "--loop", "--timestamp", "--event", "lifecycle"], dieWithUs: true)
            | PipeTarget.ToDelegate(OnLine);
        _run = RunAsync(cmd.WithValidation(CommandResultValidation.None));
    }

    private async Task RunAsync(Command cmd)
    {
        try
        {
            await cmd.ExecuteAsync(_stop.Token);
        }
        catch (OperationCanceledException) { }
        catch (Exception e) { _ignored?.Invoke("virsh event", e); } // no events: the figures stay null
    }

    private void OnLine(string line)
    {
        var i = line.IndexOf(_needle, StringComparison.Ordinal);
        if (i < 0 || line.Length < 28) return;
        if (!DateTime.TryParseExact(line[..23], "yyyy-MM-dd HH:mm:ss.fff", CultureInfo.InvariantCulture, DateTimeStyles.None, out var local)) return;
        var offset = TimeSpan.Zero;
        var z = line[23..28];
        if ((z[0] == '+' || z[0] == '-') && int.TryParse(z[1..3], out var h) && int.TryParse(z[3..5], out var m))
            offset = (z[0] == '-' ? -1 : 1) * new TimeSpan(h, m, 0);
        lock (_events) _events.Add((new DateTimeOffset(local, offset), line[(i + _needle.Length)..].Trim()));
    }

    /// <summary>When the first event whose text starts with <paramref name="prefix"/> came, or null.</summary>
    public DateTimeOffset? First(string prefix)
    {
        lock (_events)
            foreach (var (at, what) in _events)
                if (what.StartsWith(prefix, StringComparison.Ordinal)) return at;
        return null;
    }

    /// <summary>Every event so far, in order.</summary>
    public IReadOnlyList<(DateTimeOffset At, string What)> All()
    {
        lock (_events) return [.. _events];
    }

    /// <summary>Waits (at most <paramref name="timeout"/>) for such an event.</summary>
    public async Task<DateTimeOffset?> WaitForAsync(string prefix, TimeSpan timeout)
    {
        var until = DateTime.UtcNow + timeout;
        while (true)
        {
            if (First(prefix) is { } at) return at;
            if (DateTime.UtcNow > until || _run.IsCompleted) return null;
            await Task.Delay(20);
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        try { await _run; } catch (Exception e) { _ignored?.Invoke("virsh event", e); }
        _stop.Dispose();
    }
}
