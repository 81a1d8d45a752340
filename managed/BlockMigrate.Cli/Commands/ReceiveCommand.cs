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

    private static readonly ReceiverOptions Defaults = new() { ImageDir = "" };

    // Every option of receive, each once: flag, config key, default, help.
    internal static readonly Setting<string?> Listen = new("--listen", "listen",
        $"ADDR[:PORT] to listen on (port 0 picks one)", t => t, null, $"0.0.0.0:{Engine.MigrationOptions.DefaultPort}");
    internal static readonly Setting<string?> ImageDir = new("--image-dir", "image-dir", "directory the disks are written into (NAME.img)", t => t, null);
    internal static readonly Setting<string?> Key = new("--key", "key", "this receiver's key (from 'blockmigrate keygen')", t => t, null);
    internal static readonly Setting<string?> Trusted = new("--trusted", "trusted", "file of source key fingerprints allowed to send (SHA256:... per line)", t => t, null);
    internal static readonly Switch Plaintext = new("--plaintext", "plaintext", "no TLS, no authentication (only on a trusted network; the source must use it too)");
    internal static readonly Switch Once = new("--once", null, "exit after one migration: 0 if it committed, 1 if not");
    internal static readonly Setting<string> GateMapDir = new("--gate-map-dir", "gate-map-dir", "where destination shims keep their maps",
        t => t, Defaults.GateMapDir, Defaults.GateMapDir);
    internal static readonly Switch Overwrite = new("--overwrite", "overwrite",
        "let a fresh copy replace an image that is handed over, committed, gated or foreign (a VM may run on it); off by default");
    internal static readonly Setting<double> HandshakeTimeout = new("--handshake-timeout", "handshake-timeout",
        "seconds a connection has to authenticate (opening + TLS) before it is closed",
        t => Setting.Number(t, double.MinValue, double.MaxValue), Defaults.HandshakeTimeout.TotalSeconds, $"{Defaults.HandshakeTimeout.TotalSeconds:0}");
    internal static readonly Setting<int> MaxPendingHandshakes = new("--max-pending-handshakes", "max-pending-handshakes",
        "connections not yet authenticated, at most; more are closed at once", t => Setting.Int(t), Defaults.MaxPendingHandshakes, $"{Defaults.MaxPendingHandshakes}");

    internal static readonly ListSetting Seed = new("--seed", "seed",
        "a seed image (e.g. the template the VM was cloned from): blocks whose content is in it are copied here instead of sent; repeatable (comma-separated in the file); never trusted: each block is re-hashed as read",
        valueName: "FILE");
    internal static readonly Setting<string?> SeedDir = new("--seed-dir", "seed-dir",
        "a directory whose regular files are all seed images (read at each migration)", t => t, null, valueName: "DIR");

    internal static IReadOnlyList<Setting> Settings { get; } =
        [Listen, ImageDir, Key, Trusted, Plaintext, Once, GateMapDir, Overwrite, HandshakeTimeout, MaxPendingHandshakes, Seed, SeedDir];

    public static Command Create()
    {
        var config = new Option<string?>("--config") { Description = $"a 'key = value' file: {string.Join(", ", Settings.Select(s => s.Key).OfType<string>())}" };
        var command = new Command("receive", "Receive migrated disks (the destination side)") { config };
        foreach (var s in Settings) command.Options.Add(s.Option);
        command.SetAction(async (r, ct) =>
        {
            var options = Bind(new Binder(r, config));
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

    /// <summary>Binds and validates the receiver's options; every problem is a <see cref="UsageException"/>.</summary>
    internal static ReceiverOptions Bind(Binder b)
    {
        b.CheckKeys(b.File.Global, Settings);
        var dir = b.Get(ImageDir) ?? throw new UsageException("no image directory (--image-dir DIR or image-dir in the config file)");
        try
        {
            var options = new ReceiverOptions
            {
                ImageDir = Path.GetFullPath(dir),
                Listen = Endpoint.ParseListen(b.Get(Listen) ?? "*", Engine.MigrationOptions.DefaultPort),
                KeyPath = b.Get(Key),
                TrustedPath = b.Get(Trusted),
                Plaintext = b.Get(Plaintext),
                Once = b.Get(Once),
                GateMapDir = b.Get(GateMapDir),
                Overwrite = b.Get(Overwrite),
                HandshakeTimeout = TimeSpan.FromSeconds(Math.Clamp(b.Get(HandshakeTimeout), -1e6, 1e6)),
                MaxPendingHandshakes = b.Get(MaxPendingHandshakes),
                Seeds = b.Get(Seed) is { Count: > 0 } seeds ? seeds.Select(Path.GetFullPath).ToList() : Array.Empty<string>(),
                SeedDir = b.Get(SeedDir) is { } seedDir ? Path.GetFullPath(seedDir) : null,
            };
            if (options.Validate() is { Count: > 0 } problems) throw new UsageException(problems);
            return options;
        }
        catch (BlockMigrateException e)
        {
            throw new UsageException(e.Message);
        }
    }
}
