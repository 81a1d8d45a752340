// PLACEHOLDER (pkg branch): a stand-in for the real command line, so that the package can be
// built, published with NativeAOT and tested before the CLI lands.  The lead replaces this file
// with the real Program.cs on merge; keep no logic here that the package needs (see
// Logging/LogSetup.cs and Hosting/SystemdNotify.cs, which stay).
//
// Surface: the real option names, so the man page and the completion can be checked against
// --help; every command except `receive` prints "not implemented" and exits 1.  `receive`
// binds its port, tells systemd it is ready, answers each connection with one line and stops on
// SIGTERM: enough for the install test to show that the unit's ExecStart runs and answers.
using System.CommandLine;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using BlockMigrate.Cli.Hosting;
using BlockMigrate.Cli.Logging;
using NLog;

var verbose = new Option<bool>("--verbose", "-v") { Description = "Log debug detail", Recursive = true };
var quiet = new Option<bool>("--quiet", "-q") { Description = "Log warnings and errors only", Recursive = true };
var root = new RootCommand("Live migration of virtual machines with their local disks");
root.Options.Add(verbose);
root.Options.Add(quiet);

Command Stub(string name, string description, params Symbol[] symbols)
{
    var command = new Command(name, description);
    foreach (var symbol in symbols)
    {
        if (symbol is Option option) command.Options.Add(option);
        else if (symbol is Argument argument) command.Arguments.Add(argument);
    }
    command.SetAction(r =>
    {
        LogSetup.Configure(r.GetValue(verbose), r.GetValue(quiet));
        LogManager.GetLogger("blockmigrate").Error($"{name}: not implemented in this build (packaging placeholder)");
        return 1;
    });
    root.Subcommands.Add(command);
    return command;
}

Option<bool> Json() => new("--json") { Description = "Machine-readable output" };

Stub("map", "Show a dirty map", new Argument<string>("PATH"), Json());
Stub("migrate", "Migrate a VM and its disks to another host",
    new Option<string>("--config") { Description = "VM configuration file" },
    new Option<string[]>("--disk") { Description = "IMAGE:MAP of one disk (repeatable)" },
    new Option<string>("--to") { Description = "Destination HOST[:PORT]" },
    new Option<string>("--key") { Description = "TLS key file" },
    new Option<string>("--peer-fingerprint") { Description = "SHA-256 fingerprint of the receiver" },
    new Option<string>("--bandwidth") { Description = "Bandwidth limit" },
    new Option<int>("--max-downtime") { Description = "Downtime target in ms" },
    new Option<string>("--hypervisor") { Description = "qemu, xen or none" },
    Json(),
    new Option<bool>("--plaintext") { Description = "No TLS (tests only)" });
Stub("verify", "Compare two images", new Argument<string>("A"), new Argument<string>("B"), Json());
Stub("status", "Show migrations in progress");
Stub("keygen", "Make a TLS key and certificate", new Option<string>("--out") { Description = "Key file" });

var config = new Option<string>("--config") { Description = "Receiver configuration", DefaultValueFactory = _ => "/etc/blockmigrate/receiver.conf" };
var listen = new Option<string>("--listen") { Description = "ADDR:PORT to listen on" };
var receive = Stub("receive", "Receive migrations (destination host)", config, listen,
    new Option<string>("--image-dir") { Description = "Directory for received images" },
    new Option<string>("--key") { Description = "TLS key file" },
    new Option<string>("--trusted") { Description = "File of trusted peer fingerprints" });
receive.SetAction(async (r, cancel) =>
{
    LogSetup.Configure(r.GetValue(verbose), r.GetValue(quiet));
    var log = LogManager.GetLogger("receive");
    var endpoint = IPEndPoint.Parse(r.GetValue(listen) ?? ListenFromConfig(r.GetValue(config)!) ?? "[::]:7420");
    if (endpoint.Port == 0) endpoint.Port = 7420;
    using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel);
    using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
    var listener = new TcpListener(endpoint);
    listener.Start();
    log.Info($"placeholder receiver listening on {listener.LocalEndpoint}");
    SystemdNotify.Ready($"listening on {listener.LocalEndpoint}");
    try
    {
        while (true)
        {
            using var client = await listener.AcceptTcpClientAsync(stop.Token);
            await client.GetStream().WriteAsync("BLOCKMIGRATE placeholder receiver\n"u8.ToArray(), stop.Token);
        }
    }
    catch (OperationCanceledException)
    {
        SystemdNotify.Stopping();
        log.Info("stopping");
    }
    finally { listener.Stop(); }
    return 0;
});

static string? ListenFromConfig(string path)
{
    if (!File.Exists(path)) return null;
    foreach (var line in File.ReadLines(path))
    {
        var parts = line.Split('=', 2, StringSplitOptions.TrimEntries);
        if (parts.Length == 2 && parts[0] == "listen") return parts[1];
    }
    return null;
}

var result = root.Parse(args);
var rc = await result.InvokeAsync();
return result.Errors.Count > 0 ? 2 : rc;
