// A Debian bookworm guest with systemd as PID 1, booted under QEMU (TCG, no KVM needed), for the
// package's units to run with their real sandbox.
//
// The image (systemd-guest/build-image.sh) is built once and cached under build/systemd-guest/;
// each guest boots a qcow2 overlay on it, so the cached image is never written.  Three disks:
// vda the root (overlay), vdb the job disk (ext4 made with mke2fs -d from a directory: the guest's
// bm-job.service mounts it and runs its run.sh), vdc the results (the job writes a tar there).
// QEMU user networking, restricted (the guest reaches nothing), with one forward from a loopback
// port of the host to the guest's port 7420.  ttyS0 is the console (a file), ttyS1 the control
// channel (a unix socket: one line at a time both ways).  QEMU is stopped by PID on Dispose.
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;

namespace BlockMigrate.Packaging.Tests;

public sealed class SystemdGuest : IDisposable
{
    private static string CacheDir => Path.Combine(Tool.Top, "build/systemd-guest");
    public static string Script(string name) => Path.Combine(Tool.Top, "tests/BlockMigrate.Packaging.Tests/systemd-guest", name);

    private readonly string dir;
    private readonly Process qemu;
    private readonly StringBuilder qemuStderr = new();
    private Socket? control;
    private readonly StringBuilder pending = new();

    public string ConsoleLog => Path.Combine(dir, "console.log");
    public string ResultsImage => Path.Combine(dir, "results.img");

    /// <summary>The cached image directory for this .deb (builds it when missing: minutes).</summary>
    public static string Image(string deb)
    {
        var r = Tool.Run(Script("build-image.sh"), [CacheDir, deb], TimeSpan.FromMinutes(40));
        if (r.ExitCode != 0) throw new InvalidOperationException("systemd-guest/build-image.sh failed: " + r);
        return r.Stdout.Trim().Split('\n')[^1];
    }

    private SystemdGuest(string dir, Process qemu)
    {
        this.dir = dir;
        this.qemu = qemu;
        qemu.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (qemuStderr) qemuStderr.AppendLine(e.Data); };
        qemu.BeginErrorReadLine();
    }

    /// <summary>Boots a guest of <paramref name="image"/> in <paramref name="dir"/> with the job in
    /// <paramref name="jobDir"/>; <paramref name="hostPort"/> on 127.0.0.1 reaches the guest's port 7420.</summary>
    public static SystemdGuest Start(string image, string dir, string jobDir, int hostPort, int memoryMiB = 1024)
    {
        var overlay = Path.Combine(dir, "root.qcow2");
        Check(Tool.Run("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", Path.Combine(image, "root.img"), overlay], TimeSpan.FromMinutes(1)), "qemu-img create");
        var job = Path.Combine(dir, "job.img");
        var jobBytes = Directory.EnumerateFiles(jobDir).Sum(f => new FileInfo(f).Length);
        var jobMiB = jobBytes / (1 << 20) + 16;
        Check(Tool.Run("mke2fs", ["-q", "-t", "ext4", "-L", "bmjob", "-d", jobDir, job, $"{jobMiB}M"], TimeSpan.FromMinutes(1)), "mke2fs the job disk");
        var results = Path.Combine(dir, "results.img");
        using (var f = File.Create(results)) f.SetLength(64 << 20);
        var controlSocket = Path.Combine(dir, "control.sock");
        var console = Path.Combine(dir, "console.log");

        var psi = new ProcessStartInfo("qemu-system-x86_64") { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in new[]
        {
            "-machine", "pc", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", $"{memoryMiB}",
            "-nodefaults", "-display", "none", "-no-reboot",
            "-kernel", Path.Combine(image, "vmlinuz"), "-initrd", Path.Combine(image, "initrd.gz"),
            "-append", "console=ttyS0 root=/dev/vda panic=-1 loglevel=4",
            "-drive", $"file={overlay},if=virtio,format=qcow2",
            "-drive", $"file={job},if=virtio,format=raw,readonly=on",
            "-drive", $"file={results},if=virtio,format=raw",
            "-netdev", $"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{hostPort}-:7420",
            "-device", "virtio-net-pci,netdev=n0",
            "-serial", $"file:{console}",
            "-chardev", $"socket,id=ctl,path={controlSocket},server=on,wait=off",
            "-serial", "chardev:ctl",
        }) psi.ArgumentList.Add(a);
        var p = Process.Start(psi) ?? throw new InvalidOperationException("cannot start qemu-system-x86_64");
        var guest = new SystemdGuest(dir, p);
        p.StandardOutput.ReadToEndAsync();
        try
        {
            for (var i = 0; !File.Exists(controlSocket); i++)
            {
                if (p.HasExited || i > 600) throw new InvalidOperationException("QEMU did not start: " + guest.QemuStderr);
                Thread.Sleep(50);
            }
            guest.control = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            guest.control.Connect(new UnixDomainSocketEndPoint(controlSocket));
        }
        catch
        {
            guest.Dispose();
            throw;
        }
        return guest;
    }

    public string QemuStderr { get { lock (qemuStderr) return qemuStderr.ToString(); } }

    public bool HasExited => qemu.HasExited;

    /// <summary>The next line the guest sends on ttyS1 (serial noise before it, such as a lone NUL, is
    /// dropped), or a TimeoutException naming the console's last lines.</summary>
    public async Task<string> ReadLineAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        var buffer = new byte[1024];
        while (true)
        {
            var text = pending.ToString();
            var nl = text.IndexOf('\n');
            if (nl >= 0)
            {
                pending.Remove(0, nl + 1);
                var line = text[..nl].Trim('\r', '\0', ' ');
                if (line.Length > 0) return line;
                continue;
            }
            int n;
            try
            {
                n = await control!.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"no line from the guest within {timeout}; console:\n{ConsoleTail()}");
            }
            if (n == 0) throw new InvalidOperationException($"the guest's control channel closed (QEMU exited: {qemu.HasExited}); console:\n{ConsoleTail()}\n{QemuStderr}");
            pending.Append(Encoding.UTF8.GetString(buffer, 0, n));
        }
    }

    public void Send(string line) => control!.Send(Encoding.UTF8.GetBytes(line + "\n"));

    /// <summary>Waits for QEMU to exit (the guest powered off; -no-reboot).</summary>
    public bool WaitForExit(TimeSpan timeout) => qemu.WaitForExit(timeout);

    /// <summary>Unpacks the tar the job wrote to vdc into <paramref name="into"/>.</summary>
    public void ExtractResults(string into)
    {
        Directory.CreateDirectory(into);
        Check(Tool.Run("tar", ["-xf", ResultsImage, "-C", into], TimeSpan.FromMinutes(1)), "tar -x of the results disk");
    }

    public string ConsoleTail(int lines = 60)
    {
        if (!File.Exists(ConsoleLog)) return "(no console log)";
        using var s = new FileStream(ConsoleLog, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        using var r = new StreamReader(s);
        var all = r.ReadToEnd().Split('\n');
        return string.Join('\n', all.Skip(Math.Max(0, all.Length - lines)));
    }

    public void Dispose()
    {
        control?.Dispose();
        try
        {
            if (!qemu.HasExited)
            {
                qemu.Kill();
                qemu.WaitForExit(10_000);
            }
        }
        catch (InvalidOperationException) { }
        qemu.Dispose();
    }

    private static void Check(ToolResult r, string what)
    {
        if (r.ExitCode != 0) throw new InvalidOperationException($"{what} failed: {r}");
    }
}
