using System.Diagnostics;

namespace BlockMigrate.Transport;

/// <summary>
/// Token bucket for <c>--bandwidth</c>: a sender waits while the bucket is in debt, then takes its
/// frame's bytes (which may put it in debt again). The bucket holds at most 50 ms worth, so a pause
/// does not buy a long burst and measured rates stay honest.
/// </summary>
public sealed class BandwidthLimit(double bytesPerSecond)
{
    private readonly double _capacity = Math.Max(bytesPerSecond * 0.05, 64 * 1024);
    private double _tokens;
    private long _last = Stopwatch.GetTimestamp();

    /// <summary>Single caller at a time (the sender's socket loop).</summary>
    public async Task WaitAsync(int bytes, CancellationToken cancellationToken)
    {
        while (true)
        {
            var now = Stopwatch.GetTimestamp();
            _tokens = Math.Min(_capacity, _tokens + Stopwatch.GetElapsedTime(_last, now).TotalSeconds * bytesPerSecond);
            _last = now;
            if (_tokens >= 0)
            {
                _tokens -= bytes;
                return;
            }
            await Task.Delay(TimeSpan.FromSeconds(Math.Clamp(-_tokens / bytesPerSecond, 0.001, 0.1)), cancellationToken);
        }
    }
}
