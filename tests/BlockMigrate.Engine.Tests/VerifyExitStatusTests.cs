using BlockMigrate.Receiver;
using BlockMigrate.TestSupport;
using Microsoft.Win32.SafeHandles;

namespace BlockMigrate.Engine.Tests;

/// <summary>
/// migrate's exit statuses after the hand-over mean one thing each: 5 when --verify finds the
/// destination different from the source (here a receiver whose storage flips a byte of the first
/// data write), 4 for any other failure after the hand-over (FaultMatrixTests, AbortAndResumeTests).
/// </summary>
[CancelAfter(150_000)]
public class VerifyExitStatusTests
{
    /// <summary>The real storage, except that the first data write lands with its first byte flipped.</summary>
    private sealed class FlipOneByte : IReceiverStorage
    {
        private int _writes;

        public SafeFileHandle Open(SafeFileHandle dir, string name, bool create) => PosixStorage.Instance.Open(dir, name, create);

        public void Write(SafeFileHandle file, ReadOnlySpan<byte> data, long offset, StoragePoint point)
        {
            if (point == StoragePoint.DataWrite && Interlocked.Increment(ref _writes) == 1 && data.Length > 0)
            {
                var copy = data.ToArray();
                copy[0] ^= 0xff;
                PosixStorage.Instance.Write(file, copy, offset, point);
                return;
            }
            PosixStorage.Instance.Write(file, data, offset, point);
        }

        public void Zero(SafeFileHandle file, long offset, long length, StoragePoint point) => PosixStorage.Instance.Zero(file, offset, length, point);
        public void Truncate(SafeFileHandle file, long length, StoragePoint point) => PosixStorage.Instance.Truncate(file, length, point);
        public void Sync(SafeFileHandle file, StoragePoint point) => PosixStorage.Instance.Sync(file, point);
        public void Rename(string imageDir, string from, string to, StoragePoint point) => PosixStorage.Instance.Rename(imageDir, from, to, point);
    }

    [Test]
    public async Task A_verify_mismatch_exits_5_and_says_so()
    {
        using var dir = new TempDir("engine");
        using var source = SourceShim.Start(dir.Path, 8L << 20, randomBytes: 2 << 20);
        await using var receiver = await InProcessReceiver.StartAsync(dir["dst"], storage: new FlipOneByte());

        var run = await MigrateRun.RunAsync(source, receiver.Address, keys: null, "--verify");

        Assert.That(run.ExitCode, Is.EqualTo(5), run.ToString());
        Assert.That(run.Report.GetProperty("verified").GetBoolean(), Is.False);
        Assert.That(run.Error, Does.Contain("committed, but the destination differs from the source"));
    }

    [Test]
    public async Task A_verified_migration_exits_0()
    {
        using var dir = new TempDir("engine");
        using var source = SourceShim.Start(dir.Path, 8L << 20, randomBytes: 2 << 20);
        await using var receiver = await InProcessReceiver.StartAsync(dir["dst"]);

        var run = await MigrateRun.RunAsync(source, receiver.Address, keys: null, "--verify");

        Assert.That(run.ExitCode, Is.Zero, run.ToString());
        Assert.That(run.Report.GetProperty("verified").GetBoolean(), Is.True);
    }
}
