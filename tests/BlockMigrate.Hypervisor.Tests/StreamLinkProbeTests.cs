using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using BlockMigrate.Hypervisors.Qemu;
using NUnit.Framework;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// The link's rate read off the memory stream (<see cref="StreamLinkProbe"/>): the law on readings, then the
/// probe on the kernel's own counters of a real TCP connection whose reader plays a slow link.
/// </summary>
[TestFixture]
public sealed class StreamLinkProbeTests
{
    private static TimeSpan Ms(double ms) => TimeSpan.FromMilliseconds(ms);

    [Test]
    public void A_run_of_full_queues_gives_the_acknowledged_rate_after_the_settling_part()
    {
        var probe = new StreamLinkProbe();
        // the first 250 ms after the run's first reading fill the path's queues: acknowledged at 10 MB/s; then the link's 2.5 MB/s
        var due = 250 + (StreamLinkProbe.Settle + StreamLinkProbe.Span).TotalMilliseconds;
        long acked = 0;
        double? rate = null;
        for (var t = 250; t <= 3000 && rate == null; t += 250)
        {
            acked += t <= 500 ? 2_500_000 : 625_000;
            rate = probe.Add(acked, 300_000, 0, Ms(t));
            if (t < due) Assert.That(rate, Is.Null, $"not before the settling and the measuring (t = {t} ms)");
        }
        Assert.That(rate, Is.EqualTo(2.5e6).Within(1));
        Assert.That(probe.Rate, Is.EqualTo(rate));
        Assert.That(probe.Add(acked + 10_000_000, 300_000, 0, Ms(2250)), Is.Null, "measured once");
        Assert.That(probe.Rate, Is.EqualTo(2.5e6).Within(1));
    }

    [Test]
    public void The_disk_rounds_bytes_on_the_same_link_count()
    {
        var probe = new StreamLinkProbe();
        double? rate = null;
        for (var i = 1; i <= 8 && rate == null; i++)
            rate = probe.Add(i * 500_000L, 100_000, i * 125_000L, Ms(i * 250));
        Assert.That(rate, Is.EqualTo(2.5e6).Within(1), "memory 2 MB/s + disk 0.5 MB/s");
    }

    [Test]
    public void A_short_queue_restarts_the_run()
    {
        var probe = new StreamLinkProbe();
        long acked = 0;
        for (var t = 250; t <= 1500; t += 250)
        {
            acked += 625_000;
            Assert.That(probe.Add(acked, t == 1250 ? StreamLinkProbe.MinQueued - 1 : 200_000, 0, Ms(t)), Is.Null,
                "the queue ran short at 1.25 s: QEMU, not the link, held the stream back then");
        }
        double? rate = null;
        var at = 1500;
        while (rate == null && at < 4000)
        {
            at += 250;
            acked += 625_000;
            rate = probe.Add(acked, 200_000, 0, Ms(at));
        }
        Assert.That(at, Is.EqualTo(1500 + (StreamLinkProbe.Settle + StreamLinkProbe.Span).TotalMilliseconds), "a new run from 1.5 s");
        Assert.That(rate, Is.EqualTo(2.5e6).Within(1));
    }

    [Test]
    public void Readings_never_full_give_no_rate_and_odd_ones_are_ignored()
    {
        var probe = new StreamLinkProbe();
        for (var t = 250; t <= 5000; t += 250)
            Assert.That(probe.Add(t * 10_000L, 1000, 0, Ms(t)), Is.Null);
        Assert.That(probe.Rate, Is.Null);
        var other = new StreamLinkProbe();
        Assert.That(other.Add(1000, 100_000, 0, Ms(1000)), Is.Null);
        Assert.That(other.Add(2000, 100_000, 0, Ms(1000)), Is.Null, "same time");
        Assert.That(other.Add(3000, 100_000, 0, Ms(500)), Is.Null, "going back");
        for (var t = 1250; t <= 3000; t += 250)
            Assert.That(other.Add(1000, 100_000, 0, Ms(t)), Is.Null, "nothing acknowledged: no rate");
    }

    /// <summary>
    /// A sender that writes as fast as it can into a real loopback connection whose reader takes 2 MB/s (a
    /// slow link): the probe, fed the kernel's counters every 250 ms as the hypervisor feeds it, finds the
    /// reader's rate. And a sender slower than its reader never fills its queue: no rate.
    /// </summary>
    [TestCase(true)]
    [TestCase(false)]
    public async Task On_a_real_connection_the_probe_finds_the_slow_readers_rate_and_nothing_when_the_sender_is_slower(bool linkBound)
    {
        const double readerRate = 2e6;
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var meter = MemoryWireMeter.Start($"tcp:127.0.0.1:{port}");
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.ReceiveBufferSize = client.SendBufferSize = 128 << 10;
        await client.ConnectAsync(listener.LocalEndpoint);
        using var server = await listener.AcceptSocketAsync();
        listener.Stop();
        server.ReceiveBufferSize = 64 << 10;
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var reader = Task.Run(async () =>
        {
            var buf = new byte[16 << 10];
            var clock = Stopwatch.StartNew();
            long got = 0;
            while (!stop.IsCancellationRequested)
            {
                var ahead = got / readerRate - clock.Elapsed.TotalSeconds;
                if (ahead > 0) await Task.Delay(TimeSpan.FromSeconds(ahead), CancellationToken.None);
                var n = await server.ReceiveAsync(buf, SocketFlags.None, CancellationToken.None);
                if (n == 0) return;
                got += n;
            }
        });
        var writer = Task.Run(async () =>
        {
            var chunk = new byte[64 << 10];
            Random.Shared.NextBytes(chunk);
            var clock = Stopwatch.StartNew();
            long sent = 0;
            try
            {
                while (!stop.IsCancellationRequested)
                {
                    if (!linkBound && sent / (readerRate / 4) > clock.Elapsed.TotalSeconds)
                    {
                        await Task.Delay(10, CancellationToken.None); // a quarter of the reader's rate
                        continue;
                    }
                    sent += await client.SendAsync(chunk, SocketFlags.None, stop.Token);
                }
            }
            catch (OperationCanceledException) { }
        });
        var probe = new StreamLinkProbe();
        var started = Stopwatch.StartNew();
        double? rate = null;
        while (rate == null && started.Elapsed < TimeSpan.FromSeconds(6))
        {
            await Task.Delay(250);
            var r = meter.Read();
            if (r is { } reading) rate = probe.Add(reading.Acked, reading.Queued, 0, started.Elapsed);
        }
        await stop.CancelAsync();
        client.Shutdown(SocketShutdown.Both);
        await Task.WhenAll(writer, reader).WaitAsync(TimeSpan.FromSeconds(10));
        if (linkBound)
            Assert.That(rate, Is.EqualTo(readerRate).Within(25).Percent, "the acknowledged rate behind a full queue is the reader's");
        else
            Assert.That(rate, Is.Null, "a sender slower than its link never fills its queue");
    }
}
