using System.Diagnostics;

namespace BlockMigrate.TestSupport;

/// <summary>
/// One TCG QEMU running the test guest (tools/guest) with its disk on an NBD unix socket. It has two
/// QMP monitors, because a QEMU monitor serves one client at a time: <see cref="QmpSocket"/> for the
/// code under test and <see cref="ObserverQmpSocket"/> for the test's own checks. Killed by PID on Dispose.
/// Start a migration destination with the same options plus <c>Incoming</c> and <c>Paused</c>: the
/// device configuration must match the source's.
/// </summary>
public sealed class QemuGuest : IDisposable
{
    private readonly Process _process;

    private QemuGuest(Process process, QemuGuestOptions options, string dir)
    {
        _process = process;
        Options = options;
        QmpSocket = System.IO.Path.Combine(dir, options.Name + ".qmp");
        ObserverQmpSocket = System.IO.Path.Combine(dir, options.Name + "-observer.qmp");
        Serial = new SerialLog(System.IO.Path.Combine(dir, options.Name + ".serial"));
    }

    public QemuGuestOptions Options { get; }
    public int Pid => _process.Id;
    public string QmpSocket { get; }
    public string ObserverQmpSocket { get; }
    public SerialLog Serial { get; }
    public bool HasExited => _process.HasExited;

    public static QemuGuest Start(string dir, QemuGuestOptions o)
    {
        var qmp = System.IO.Path.Combine(dir, o.Name + ".qmp");
        var observer = System.IO.Path.Combine(dir, o.Name + "-observer.qmp");
        var serial = System.IO.Path.Combine(dir, o.Name + ".serial");
        var args = new List<string>
        {
            "qemu-system-x86_64", "-name", o.Name, "-accel", "tcg", "-m", o.MemoryMiB.ToString(), "-smp", "1",
            "-display", "none", "-nodefaults", "-no-user-config",
            "-chardev", $"file,id=ser0,path={serial}", "-serial", "chardev:ser0",
            "-qmp", $"unix:{qmp},server=on,wait=off",
            "-qmp", $"unix:{observer},server=on,wait=off",
            "-kernel", GuestImage.Kernel, "-initrd", GuestImage.Initrd,
            "-append", $"console=ttyS0 quiet panic=-1 nblk={o.Blocks} every={o.Every}" + (o.KernelArgs is { } k ? " " + k : ""),
            "-blockdev", $"driver=nbd,server.type=unix,server.path={o.DiskSocket},export=,node-name=d0",
            "-device", "virtio-blk-pci,drive=d0,id=vblk0",
        };
        args.AddRange(o.ExtraArgs);
        if (o.Incoming)
            args.AddRange(["-incoming", "defer"]);
        if (o.Paused)
            args.Add("-S");
        if (o.Namespace != null)
            args.InsertRange(0, ["ip", "netns", "exec", o.Namespace]); // ip execs QEMU: the PID is QEMU's
        var psi = new ProcessStartInfo(args[0])
        {
            UseShellExecute = false,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        foreach (var a in args.Skip(1))
            psi.ArgumentList.Add(a);
        psi.Environment["PATH"] = Tool.Env["PATH"];
        var p = Process.Start(psi) ?? throw new InvalidOperationException("cannot start qemu-system-x86_64");
        p.BeginErrorReadLine();
        p.BeginOutputReadLine();
        var guest = new QemuGuest(p, o, dir);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (!File.Exists(qmp) || !File.Exists(observer))
        {
            if (p.HasExited)
                throw new InvalidOperationException($"qemu {o.Name} exited {p.ExitCode} at start");
            if (DateTime.UtcNow > deadline)
            {
                guest.Dispose();
                throw new TimeoutException($"qemu {o.Name} did not create its monitors");
            }
            Thread.Sleep(20);
        }
        return guest;
    }

    /// <summary>Kills QEMU now (SIGKILL), as a crash would.</summary>
    public void Kill()
    {
        _process.KillAndWait();
    }

    public void Dispose()
    {
        Kill();
        _process.Dispose();
    }
}
