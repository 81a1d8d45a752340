using System.CommandLine;
using BlockMigrate.Cli.Config;
using BlockMigrate.Receiver;

namespace BlockMigrate.Cli.Commands;

/// <summary>
/// <c>blockmigrate receive</c>: the destination's receiver. Flags override the config file's values.
/// Prints "listening on ADDR:PORT" on stdout once it accepts connections; logs go to stderr.
/// </summary>
public static class ReceiveCommand
{
    public static Command Create()
    {
        var config = new Option<string?>("--config") { Description = "a 'key = value' file: listen, image-dir, key, trusted, plaintext, gate-map-dir" };
        var listen = new Option<string?>("--listen") { Description = $"ADDR[:PORT] to listen on (default 0.0.0.0:{Engine.MigrationOptions.DefaultPort}; port 0 picks one)" };
        var imageDir = new Option<string?>("--image-dir") { Description = "directory the disks are written into (NAME.img)" };
        var key = new Option<string?>("--key") { Description = "this receiver's key (from 'blockmigrate keygen')" };
        var trusted = new Option<string?>("--trusted") { Description = "file of source key fingerprints allowed to send (SHA256:... per line)" };
        var plaintext = new Option<bool>("--plaintext") { Description = "no TLS, no authentication (only on a trusted network; the source must use it too)" };
        var once = new Option<bool>("--once") { Description = "exit after one migration: 0 if it committed, 1 if not" };
        var gateDir = new Option<string?>("--gate-map-dir") { Description = "where destination shims keep their maps (default /dev/shm/blockmigrate)" };
        var command = new Command("receive", "Receive migrated disks (the destination side)") { config, listen, imageDir, key, trusted, plaintext, once, gateDir };
        command.SetAction(async (r, ct) =>
        {
            var file = r.GetValue(config) is { } path ? KeyValueFile.Load(path) : new KeyValueFile();
            KeyValueFile.CheckKeys(r.GetValue(config) ?? "", file.Global, "listen", "image-dir", "key", "trusted", "plaintext", "gate-map-dir");
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
            };
            var receiver = new Receiver.Receiver(options);
            receiver.Log += line => Console.Error.WriteLine($"{DateTime.UtcNow:HH:mm:ss.fff} receive: {line}");
            receiver.Listening += ep =>
            {
                Console.Out.WriteLine($"listening on {ep}");
                Console.Out.Flush();
            };
            try
            {
                return await receiver.RunAsync(ct);
            }
            catch (BlockMigrateException e)
            {
                return CommandRunner.Fail(e.Message);
            }
        });
        return command;
    }
}
