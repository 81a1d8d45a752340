using System.CommandLine;
using BlockMigrate.Cli.Config;
using BlockMigrate.Cli.Hosting;
using BlockMigrate.Receiver;
using NLog;

namespace BlockMigrate.Cli.Commands;

/// <summary>
/// <c>blockmigrate receive</c>: the destination's receiver. Flags override the config file's values.
/// Prints "listening on ADDR:PORT" on stdout once it accepts connections and tells systemd it is ready
/// (Type=notify); logs go through NLog to stderr (journald priorities under systemd). SIGTERM or SIGINT:
/// sessions are cancelled (nothing uncommitted is kept as committed), STOPPING=1, exit 0.
/// </summary>
public static class ReceiveCommand
{
    private static readonly Logger Log = LogManager.GetLogger("receive");

    /// <summary>A yes/no config value: true/yes/1, false/no/0 or absent; anything else is an error.</summary>
    private static bool Flag(string? value, string key) => value switch
    {
        null or "false" or "no" or "0" => false,
        "true" or "yes" or "1" => true,
        _ => throw new UsageException($"{key} = {value}: expected true or false"),
    };

    public static Command Create()
    {
        var config = new Option<string?>("--config") { Description = "a 'key = value' file: listen, image-dir, key, trusted, plaintext, gate-map-dir, overwrite, handshake-timeout, max-pending-handshakes" };
        var listen = new Option<string?>("--listen") { Description = $"ADDR[:PORT] to listen on (default 0.0.0.0:{Engine.MigrationOptions.DefaultPort}; port 0 picks one)" };
        var imageDir = new Option<string?>("--image-dir") { Description = "directory the disks are written into (NAME.img)" };
        var key = new Option<string?>("--key") { Description = "this receiver's key (from 'blockmigrate keygen')" };
        var trusted = new Option<string?>("--trusted") { Description = "file of source key fingerprints allowed to send (SHA256:... per line)" };
        var plaintext = new Option<bool>("--plaintext") { Description = "no TLS, no authentication (only on a trusted network; the source must use it too)" };
        var once = new Option<bool>("--once") { Description = "exit after one migration: 0 if it committed, 1 if not" };
        var gateDir = new Option<string?>("--gate-map-dir") { Description = "where destination shims keep their maps (default /dev/shm/blockmigrate)" };
        var overwrite = new Option<bool>("--overwrite")
        {
            Description = "let a fresh copy replace an image that is handed over, committed, gated or foreign (a VM may run on it); off by default",
        };
        var handshakeTimeout = new Option<double?>("--handshake-timeout")
        {
            Description = $"seconds a connection has to authenticate (opening + TLS) before it is closed (default {ReceiverOptions.DefaultHandshakeTimeout.TotalSeconds:0})",
        };
        var maxPending = new Option<int?>("--max-pending-handshakes")
        {
            Description = $"connections not yet authenticated, at most; more are closed at once (default {ReceiverOptions.DefaultMaxPendingHandshakes})",
        };
        var command = new Command("receive", "Receive migrated disks (the destination side)") { config, listen, imageDir, key, trusted, plaintext, once, gateDir, overwrite };
        command.Options.Add(handshakeTimeout);
        command.Options.Add(maxPending);
        command.SetAction(async (r, ct) =>
        {
            var file = r.GetValue(config) is { } path ? KeyValueFile.Load(path) : new KeyValueFile();
            KeyValueFile.CheckKeys(r.GetValue(config) ?? "", file.Global, "listen", "image-dir", "key", "trusted", "plaintext", "gate-map-dir", "overwrite",
                "handshake-timeout", "max-pending-handshakes");
            string? Get(Option<string?> o, string name) => r.GetValue(o) ?? file.Global.GetValueOrDefault(name);
            var dir = Get(imageDir, "image-dir") ?? throw new BlockMigrateException("no image directory (--image-dir DIR or image-dir in the config file)");
            var options = new ReceiverOptions
            {
                ImageDir = Path.GetFullPath(dir),
                Listen = Endpoint.ParseListen(Get(listen, "listen") ?? "*", Engine.MigrationOptions.DefaultPort),
                KeyPath = Get(key, "key"),
                TrustedPath = Get(trusted, "trusted"),
                Plaintext = r.GetValue(plaintext) || file.Global.GetValueOrDefault("plaintext") is "true" or "yes" or "1",
                Once = r.GetValue(once),
                GateMapDir = Get(gateDir, "gate-map-dir") ?? "/dev/shm/blockmigrate",
                Overwrite = r.GetValue(overwrite) || Flag(file.Global.GetValueOrDefault("overwrite"), "overwrite"),
                HandshakeTimeout = TimeSpan.FromSeconds(r.GetValue(handshakeTimeout)
                    ?? Number(file, "handshake-timeout", 0.1, 3600) ?? ReceiverOptions.DefaultHandshakeTimeout.TotalSeconds),
                MaxPendingHandshakes = r.GetValue(maxPending) ?? (int?)Number(file, "max-pending-handshakes", 1, 100000) ?? ReceiverOptions.DefaultMaxPendingHandshakes,
            };
            if (options.HandshakeTimeout.TotalSeconds is < 0.1 or > 3600) throw new UsageException("--handshake-timeout: expected 0.1 to 3600 seconds");
            if (options.MaxPendingHandshakes is < 1 or > 100000) throw new UsageException("--max-pending-handshakes: expected 1 to 100000");
            if (options.Overwrite) Log.Warn("--overwrite: a fresh copy may replace a handed-over, committed, gated or foreign image");
            var receiver = new ReceiverServer(options, new Logging.NLogLogger(Log));
            receiver.Listening += ep =>
            {
                Console.Out.WriteLine($"listening on {ep}");
                Console.Out.Flush();
                SystemdNotify.Ready($"listening on {ep}");
            };
            using var stopping = ct.Register(() =>
            {
                Log.Info("stopping (signal)");
                SystemdNotify.Stopping();
            });
            try
            {
                var code = await receiver.RunAsync(ct);
                // a stop by signal is the normal end of a service, not a failure
                return ct.IsCancellationRequested ? CommandRunner.Ok : code;
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return CommandRunner.Ok;
            }
            catch (BlockMigrateException e)
            {
                Log.Error(e.Message);
                return CommandRunner.Failure;
            }
        });
        return command;
    }

    /// <summary>A number from the config file, within [min, max]; null when absent.</summary>
    private static double? Number(KeyValueFile file, string key, double min, double max) =>
        file.Global.GetValueOrDefault(key) is not { } v ? null
        : double.TryParse(v, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var n) && n >= min && n <= max ? n
        : throw new UsageException($"{key} = {v}: expected a number from {min} to {max}");
}
