using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// A QEMU with no guest at all, CPUs stopped (-S): enough to talk QMP to, and cheap on a 2-core
/// machine. One monitor on a unix socket, one on TCP. Killed by PID on Dispose.
/// </summary>
internal sealed class BareQemu : IDisposable
{
    private readonly Process _process;

    private BareQemu(Process process, string socket, int port)
    {
        _process = process;
        Socket = socket;
        TcpAddress = $"tcp:127.0.0.1:{port}";
    }

    public string Socket { get; }
    public string TcpAddress { get; }

    public static BareQemu Start(string dir)
    {
        var socket = Path.Combine(dir, "bare.qmp");
        var port = FreePort();
        var psi = new ProcessStartInfo("qemu-system-x86_64") { UseShellExecute = false, RedirectStandardError = true };
        foreach (var a in new[]
                 {
                     "-accel", "tcg", "-m", "32", "-display", "none", "-nodefaults", "-no-user-config", "-S",
                     "-qmp", $"unix:{socket},server=on,wait=off",
                     "-qmp", $"tcp:127.0.0.1:{port},server=on,wait=off",
                 })
            psi.ArgumentList.Add(a);
        psi.Environment["PATH"] = Tool.Env["PATH"];
        var p = Process.Start(psi) ?? throw new InvalidOperationException("cannot start qemu");
        p.BeginErrorReadLine();
        var q = new BareQemu(p, socket, port);
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (!File.Exists(socket))
        {
            if (p.HasExited || DateTime.UtcNow > deadline)
            {
                q.Dispose();
                throw new InvalidOperationException("bare qemu did not start");
            }
            Thread.Sleep(20);
        }
        return q;
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

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
