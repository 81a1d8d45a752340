// sd_notify(3) in managed code: one datagram of "KEY=value" lines to the unix socket named by
// $NOTIFY_SOCKET.  systemd sets the variable for Type=notify services; anywhere else it is unset
// and every call is a no-op that returns false.  A name starting with '@' is in the abstract
// namespace (the '@' stands for a leading NUL byte).  No P/Invoke: .NET sockets speak AF_UNIX.
using System.Net.Sockets;
using System.Text;

namespace BlockMigrate.Cli.Hosting;

public static class SystemdNotify
{
    public const string SocketVariable = "NOTIFY_SOCKET";

    /// <summary>True when the process was started by systemd with a notification socket.</summary>
    public static bool IsAvailable => !string.IsNullOrEmpty(Environment.GetEnvironmentVariable(SocketVariable));

    /// <summary>Tells systemd the service is ready (call once, after the listening socket is bound).</summary>
    public static bool Ready(string? status = null) =>
        Notify(status is null ? "READY=1" : $"READY=1\nSTATUS={status}");

    public static bool Status(string status) => Notify($"STATUS={status}");

    public static bool Stopping() => Notify("STOPPING=1");

    /// <summary>Sends <paramref name="state"/> (newline-separated assignments) to $NOTIFY_SOCKET.</summary>
    public static bool Notify(string state) =>
        Notify(state, Environment.GetEnvironmentVariable(SocketVariable));

    /// <summary>Sends <paramref name="state"/> to the given socket name; false when there is none.</summary>
    /// <exception cref="SocketException">the socket exists but the datagram could not be sent</exception>
    public static bool Notify(string state, string? socketName)
    {
        if (string.IsNullOrEmpty(socketName))
            return false;
        if (socketName[0] != '/' && socketName[0] != '@')
            return false; // sd_notify ignores other forms (vsock addresses), and so do we
        var path = socketName[0] == '@' ? "\0" + socketName[1..] : socketName;
        using var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        socket.SendTo(Encoding.UTF8.GetBytes(state), new UnixDomainSocketEndPoint(path));
        return true;
    }
}
