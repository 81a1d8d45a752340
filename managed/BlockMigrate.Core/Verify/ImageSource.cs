using System.Diagnostics;

namespace BlockMigrate.Verify;

/// <summary>
/// Sequential bytes of an image: a file, or an NBD URI read through <c>nbdcopy URI -</c>
/// (libnbd's own client, so whatever the export serves — the shim's gate included — is what is compared).
/// </summary>
public sealed class ImageSource : IDisposable
{
    private readonly Process? _process;

    private ImageSource(string name, Stream stream, long? size, Process? process)
    {
        Name = name;
        Stream = stream;
        Size = size;
        _process = process;
    }

    public string Name { get; }
    public Stream Stream { get; }
    public long? Size { get; }

    public static ImageSource Open(string spec)
    {
        if (spec.StartsWith("nbd:", StringComparison.Ordinal) || spec.StartsWith("nbd+", StringComparison.Ordinal) || spec.StartsWith("nbds", StringComparison.Ordinal))
        {
            var psi = new ProcessStartInfo("nbdcopy") { RedirectStandardOutput = true, RedirectStandardError = false, UseShellExecute = false };
            psi.ArgumentList.Add(spec);
            psi.ArgumentList.Add("-");
            try
            {
                var p = Process.Start(psi) ?? throw new BlockMigrateException("cannot start nbdcopy");
                return new ImageSource(spec, p.StandardOutput.BaseStream, null, p);
            }
            catch (System.ComponentModel.Win32Exception e)
            {
                throw new BlockMigrateException($"cannot run nbdcopy to read {spec}: {e.Message} (install libnbd-bin)");
            }
        }
        try
        {
            var f = new FileStream(spec, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 20);
            return new ImageSource(spec, f, f.Length, null);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BlockMigrateException($"cannot open image {spec}: {e.Message}");
        }
    }

    /// <summary>After reading to the end: throws if nbdcopy failed (a short read is then not a real size).</summary>
    public void CheckCompleted()
    {
        if (_process == null) return;
        if (!_process.WaitForExit(30_000)) throw new BlockMigrateException($"nbdcopy reading {Name} did not finish");
        if (_process.ExitCode != 0) throw new BlockMigrateException($"nbdcopy could not read {Name} (exit {_process.ExitCode})");
    }

    public void Dispose()
    {
        Stream.Dispose();
        if (_process is { HasExited: false })
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit(5000);
        }
        _process?.Dispose();
    }
}
