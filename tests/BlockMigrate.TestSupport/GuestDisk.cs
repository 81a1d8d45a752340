using System.Text;

namespace BlockMigrate.TestSupport;

/// <summary>
/// Checks a disk written by the test guest (tools/guest/init): block b holds
/// "SEQ %010d BLK %08d\n" for the writes i with i % blocks == b. With S the highest sequence number
/// found, every block must hold exactly the newest i &lt;= S with i ≡ b (mod blocks), and blocks that
/// were never written (S &lt; b) must hold no record. A lost write leaves an older number; a stale
/// block (an old copy delivered after a newer write) does too; a torn or misplaced block fails to parse.
/// </summary>
public static class GuestDisk
{
    public const int BlockSize = 4096;
    private const int RecordLength = 28; // "SEQ " + 10 digits + " BLK " + 8 digits + "\n"

    public static GuestDiskReport Verify(string image, int blocks)
    {
        var seqs = new long[blocks];
        var problems = new List<string>();
        var buffer = new byte[BlockSize];
        long max = -1;
        using (var f = new FileStream(image, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
        {
            for (var b = 0; b < blocks; b++)
            {
                seqs[b] = -1;
                var n = f.ReadAtLeast(buffer, BlockSize, throwOnEndOfStream: false);
                if (n < BlockSize)
                {
                    problems.Add($"image ends at block {b}");
                    break;
                }
                if (buffer.AsSpan(0, RecordLength).IndexOfAnyExcept((byte)0) < 0)
                    continue; // never written
                var text = Encoding.ASCII.GetString(buffer, 0, RecordLength);
                if (!text.StartsWith("SEQ ", StringComparison.Ordinal) || text[14..19] != " BLK " || text[^1] != '\n'
                    || !long.TryParse(text[4..14], out var seq) || !int.TryParse(text[19..27], out var blk))
                {
                    problems.Add($"block {b}: unreadable record '{text.TrimEnd('\n', '\0')}'");
                    continue;
                }
                if (blk != b)
                    problems.Add($"block {b}: holds the record of block {blk}");
                seqs[b] = seq;
                max = Math.Max(max, seq);
            }
        }
        if (max < 0)
            problems.Add("no record on the disk");
        else
            for (var b = 0; b < blocks && problems.Count < 10; b++)
            {
                var expected = b > max ? -1 : max - ((max - b) % blocks);
                if (seqs[b] != expected)
                    problems.Add($"block {b}: seq {seqs[b]}, expected {expected}");
            }
        return new GuestDiskReport(problems.Count == 0, max, problems);
    }
}
