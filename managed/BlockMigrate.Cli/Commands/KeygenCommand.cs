using System.CommandLine;
using BlockMigrate.Transport;

namespace BlockMigrate.Cli.Commands;

/// <summary><c>blockmigrate keygen --out FILE</c>: a host key (ECDSA P-256 + self-signed certificate, PEM, mode 0600).</summary>
public static class KeygenCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--out", "-o") { Description = "where to write the key (PEM; must not exist)", Required = true };
        var name = new Option<string?>("--name") { Description = "name put in the certificate (default: this host's name); informational only" };
        var command = new Command("keygen", "Make a host key and print its fingerprint (give it to the peer: trusted file or --peer-fingerprint)") { output, name };
        command.SetAction(r =>
        {
            var path = r.GetValue(output)!;
            using var key = NodeKey.Generate(path, r.GetValue(name) ?? Environment.MachineName);
            Console.WriteLine(key.Fingerprint);
            Console.Error.WriteLine($"blockmigrate: wrote {path}; its fingerprint is on stdout");
            return CommandRunner.Ok;
        });
        return command;
    }

    /// <summary><c>blockmigrate fingerprint FILE</c>: print the fingerprint of an existing key.</summary>
    public static Command CreateFingerprint()
    {
        var path = new Argument<string>("key") { Description = "a key file made by 'blockmigrate keygen'" };
        var command = new Command("fingerprint", "Print the fingerprint of a key file") { path };
        command.SetAction(r =>
        {
            using var key = NodeKey.Load(r.GetValue(path)!);
            Console.WriteLine(key.Fingerprint);
            return CommandRunner.Ok;
        });
        return command;
    }
}
