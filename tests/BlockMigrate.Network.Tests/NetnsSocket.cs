using System.ComponentModel;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace BlockMigrate.Network.Tests;

/// <summary>
/// Creates sockets inside a named network namespace: a fresh thread joins the namespace (setns), creates
/// the socket and ends. A socket keeps the namespace it was created in, so it can then be used from any
/// thread, with async I/O, while the test process itself stays in the host namespace.
/// </summary>
internal static partial class NetnsSocket
{
    const int CloneNewNet = 0x40000000;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int setns(int fd, int nstype);

    public static Socket Tcp(string ns)
    {
        Socket? socket = null;
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var h = File.OpenHandle($"/run/netns/{ns}", FileMode.Open, FileAccess.Read);
                if (setns((int)h.DangerousGetHandle(), CloneNewNet) != 0)
                    throw new Win32Exception(Marshal.GetLastPInvokeError(), $"setns {ns}");
                socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            }
            catch (Exception ex) { error = ex; }
        });
        thread.Start();
        thread.Join();
        if (error is not null) throw error;
        return socket!;
    }
}
