// PLACEHOLDER (pkg branch): stand-ins for the commands that have not landed yet, so that the
// package can be built, published with NativeAOT and tested before they do.  AddMissing adds
// only the commands the root does not have yet, so a real command simply takes over; delete
// this file (and its call in Program.cs) once all of them are real.
//
// The option names are the real ones, so the man page and the completion can be checked
// against --help.  Every stand-in except `receive` logs "not implemented" and exits 1.
// `receive` binds its port, tells systemd it is ready, answers each connection with one line
// and stops on SIGTERM: enough for the install test to show that the unit's ExecStart runs.
using System.CommandLine;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using BlockMigrate.Cli.Hosting;
using NLog;

namespace BlockMigrate.Cli.Commands;

public static class PackagingPlaceholders
{
    public static void AddMissing(RootCommand root)
    {
        Add(root, Stub("migrate", "Migrate a VM and its disks to another host",
            new Option<string>("--config") { Description = "VM configuration file" },
            new Option<string[]>("--disk") { Description = "IMAGE:MAP of one disk (repeatable)" },
            new Option<string>("--to") { Description = "Destination HOST[:PORT]" },
            new Option<string>("--key") { Description = "TLS key file" },
            new Option<string>("--peer-fingerprint") { Description = "SHA-256 fingerprint of the receiver" },
            new Option<string>("--bandwidth") { Description = "Bandwidth limit" },
            new Option<int>("--max-downtime") { Description = "Downtime target in ms" },
            new Option<string>("--hypervisor") { Description = "qemu, xen or none" },
            Json(),
            new Option<bool>("--plaintext") { Description = "No TLS (tests only)" }));
        Add(root, Stub("verify", "Compare two images", new Argument<string>("A"), new Argument<string>("B"), Json()));
        Add(root, Stub("status", "Show migrations in progress"));
        Add(root, Stub("keygen", "Make a TLS key and certificate", new Option<string>("--out") { Description = "Key file" }));
        Add(root, Receive());
    }

    private static void Add(RootCommand root, Command command)
    {
        if (root.Subcommands.All(c => c.Name != command.Name))
            root.Subcommands.Add(command);
    }

    private static Option<bool> Json() => new("--json") { Description = "Machine-readable output" };

    private static Command Stub(string name, string description, params Symbol[] symbols)
    {
        var command = new Command(name, description);
        foreach (var symbol in symbols)
        {
            if (symbol is Option option) command.Options.Add(option);
            else if (symbol is Argument argument) command.Arguments.Add(argument);
        }
        command.SetAction(_ =>
        {
            LogManager.GetLogger("blockmigrate").Error($"{name}: not implemented in this build (packaging placeholder)");
            return CommandRunner.Failure;
        });
        return command;
    }

    private static Command Receive()
    {
        var config = new Option<string>("--config") { Description = "Receiver configuration", DefaultValueFactory = _ => "/etc/blockmigrate/receiver.conf" };
        var listen = new Option<string>("--listen") { Description = "ADDR:PORT to listen on" };
        var receive = Stub("receive", "Receive migrations (destination host)", config, listen,
            new Option<string>("--image-dir") { Description = "Directory for received images" },
            new Option<string>("--key") { Description = "TLS key file" },
            new Option<string>("--trusted") { Description = "File of trusted peer fingerprints" });
        receive.SetAction(r => Listen(r.GetValue(listen) ?? ListenFromConfig(r.GetValue(config)!) ?? "[::]:7420"));
        return receive;
    }

    private static int Listen(string address)
    {
        var log = LogManager.GetLogger("receive");
        var endpoint = IPEndPoint.Parse(address);
        if (endpoint.Port == 0) endpoint.Port = 7420;
        using var stop = new CancellationTokenSource();
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
        using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
        var listener = new TcpListener(endpoint);
        listener.Start();
        log.Info($"placeholder receiver listening on {listener.LocalEndpoint}");
        SystemdNotify.Ready($"listening on {listener.LocalEndpoint}");
        try
        {
            while (true)
            {
                using var client = listener.AcceptTcpClientAsync(stop.Token).AsTask().GetAwaiter().GetResult();
                client.GetStream().Write("BLOCKMIGRATE placeholder receiver\n"u8);
            }
        }
        catch (OperationCanceledException)
        {
            SystemdNotify.Stopping();
            log.Info("stopping");
        }
        finally { listener.Stop(); }
        return CommandRunner.Ok;
    }

    private static string? ListenFromConfig(string path)
    {
        if (!File.Exists(path)) return null;
        foreach (var line in File.ReadLines(path))
        {
            var parts = line.Split('=', 2, StringSplitOptions.TrimEntries);
            if (parts.Length == 2 && parts[0] == "listen") return parts[1];
        }
        return null;
    }
}
