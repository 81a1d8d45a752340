namespace BlockMigrate.Verify;

/// <summary>
/// Compares two images in 4 KiB units, streaming both once; adjacent differing units merge into one
/// extent. A size difference counts the tail of the longer image as differing.
/// </summary>
public static class ImageComparer
{
    public const int Unit = 4096;

    public static Comparison Compare(ImageSource a, ImageSource b, int maxExtents = 100_000)
    {
        var bufA = new byte[1 << 20];
        var bufB = new byte[1 << 20];
        var diffs = new List<DiffExtent>();
        long pos = 0, differing = 0, sizeA = 0, sizeB = 0;
        long runStart = -1, runEnd = -1;
        while (true)
        {
            var na = a.Stream.ReadAtLeast(bufA, bufA.Length, throwOnEndOfStream: false);
            var nb = b.Stream.ReadAtLeast(bufB, bufB.Length, throwOnEndOfStream: false);
            sizeA += na;
            sizeB += nb;
            var n = Math.Max(na, nb);
            if (n == 0) break;
            for (var off = 0; off < n; off += Unit)
            {
                var len = Math.Min(Unit, n - off);
                var ea = Math.Clamp(na - off, 0, len);
                var eb = Math.Clamp(nb - off, 0, len);
                var same = ea == eb && bufA.AsSpan(off, ea).SequenceEqual(bufB.AsSpan(off, eb));
                if (same) continue;
                differing += len;
                var start = pos + off;
                if (runEnd == start) runEnd = start + len;
                else
                {
                    if (runStart >= 0 && diffs.Count < maxExtents) diffs.Add(new DiffExtent(runStart, runEnd - runStart));
                    (runStart, runEnd) = (start, start + len);
                }
            }
            pos += n;
        }
        if (runStart >= 0 && diffs.Count < maxExtents) diffs.Add(new DiffExtent(runStart, runEnd - runStart));
        a.CheckCompleted();
        b.CheckCompleted();
        return new Comparison(sizeA, sizeB, diffs, differing);
    }
}
