using System.CommandLine;
using BlockMigrate.Hypervisors.Libvirt;

namespace BlockMigrate.Cli.Commands;

/// <summary>
/// <c>blockmigrate adopt</c>: put a running libvirt domain's disk behind the shim without a restart
/// (libvirt block copy + pivot onto the shim's NBD socket); <c>blockmigrate release</c>: the reverse, onto
/// a local file. See docs/hypervisors.md, "libvirt".
/// </summary>
public static class AdoptCommand
{
    public static Command Create() => Build("adopt",
        "Put a running libvirt domain's disk behind the shim, without a restart (block copy + pivot onto the shim's socket)", release: false);

    public static Command CreateRelease() => Build("release",
        "Move a running libvirt domain's disk from the shim back to a local file (block copy + pivot)", release: true);

    private static Command Build(string name, string description, bool release)
    {
        var domain = new Option<string>("--domain") { Description = "the libvirt domain", Required = true };
        var connect = new Option<string?>("--connect") { Description = "libvirt URI (default: virsh's, qemu:///system as root)" };
        var target = new Option<string?>("--target") { Description = "the disk's target, e.g. vda (default: the domain's only writable disk)" };
        var socket = new Option<string>("--socket") { Description = "the shim's unix socket, serving the new image", Required = true };
        var file = new Option<string>("--file") { Description = "the local file the disk moves to (created by libvirt)", Required = true };
        var reuse = new Option<bool>("--reuse-file") { Description = "copy into an existing file (same size and format) instead of creating it" };
        var shallow = new Option<bool?>("--shallow") { Description = "copy the top image only; the backing file stays (default: when the disk has one)" };
        var virsh = new Option<string?>("--virsh") { Description = "the virsh executable (default virsh)" };
        var command = new Command(name, description) { domain, connect, target, shallow, virsh };
        if (release) { command.Options.Add(file); command.Options.Add(reuse); }
        else command.Options.Add(socket);
        command.SetAction(async (r, ct) =>
        {
            var o = new LibvirtAdoptOptions
            {
                Domain = r.GetValue(domain)!,
                Connect = r.GetValue(connect),
                Target = r.GetValue(target),
                Socket = release ? null : r.GetValue(socket),
                File = release ? r.GetValue(file) : null,
                ReuseFile = release && r.GetValue(reuse),
                Shallow = r.GetValue(shallow),
                Virsh = r.GetValue(virsh) ?? "virsh",
            };
            try
            {
                void Log(string line) => Console.Error.WriteLine($"blockmigrate: {name}: {line}");
                if (release) await LibvirtAdopt.ReleaseAsync(o, Log, ct);
                else await LibvirtAdopt.AdoptAsync(o, Log, ct);
                return CommandRunner.Ok;
            }
            catch (BlockMigrateException e)
            {
                return CommandRunner.Fail(e.Message);
            }
        });
        return command;
    }
}
