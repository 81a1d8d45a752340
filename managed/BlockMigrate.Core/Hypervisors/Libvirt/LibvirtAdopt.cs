using System.Globalization;
using System.Xml.Linq;

namespace BlockMigrate.Hypervisors.Libvirt;

/// <summary>What <c>blockmigrate adopt</c> / <c>release</c> act on.</summary>
public sealed record LibvirtAdoptOptions
{
    public required string Domain { get; init; }
    public string? Connect { get; init; }
    /// <summary>The disk's target (<c>vda</c>); null = the domain's only writable disk.</summary>
    public string? Target { get; init; }
    /// <summary>adopt: the shim's socket, serving the new image; release: null.</summary>
    public string? Socket { get; init; }
    /// <summary>release: the local file the disk goes back to (created by libvirt unless <see cref="ReuseFile"/>).</summary>
    public string? File { get; init; }
    public bool ReuseFile { get; init; }
    /// <summary>Keep the backing chain (copy only the top image: <c>--shallow</c>); default: when the disk has a backing file.</summary>
    public bool? Shallow { get; init; }
    public string Virsh { get; init; } = "virsh";
    /// <summary>How long the block copy may take before it is cancelled (the domain then stays on its old disk).</summary>
    public TimeSpan CopyTimeout { get; init; } = TimeSpan.FromMinutes(60);
}

/// <summary>
/// Puts a running domain's disk behind the shim without a restart, and back: libvirt's block copy with
/// pivot (<c>virsh blockcopy --wait --pivot --transient-job</c>). QEMU mirrors the disk onto the target
/// while the guest runs, sends every guest write to both once the bulk copy is done, and pivots atomically:
/// no write is lost, and from the pivot on every write goes to the target only. For <c>adopt</c> the target
/// is the shim's NBD socket, serving a new image the admin made (raw: same size; qcow2: same format, with
/// the same backing file when <see cref="LibvirtAdoptOptions.Shallow"/>); the shim tracks every byte QEMU
/// writes into it from the first. The persistent definition (if any) is updated to the new disk.
/// </summary>
public static class LibvirtAdopt
{
    public static async Task AdoptAsync(LibvirtAdoptOptions o, Action<string> log, CancellationToken ct)
    {
        if (o.Socket is not { } socket || !socket.StartsWith('/'))
            throw new HypervisorException("adopt: --socket must be the absolute path of the shim's unix socket");
        var virsh = new Virsh(o.Virsh, o.Connect, TimeSpan.FromSeconds(60));
        var (disk, target) = await FindDiskAsync(virsh, o, ct);
        var type = (string?)disk.Attribute("type");
        var host = disk.Element("source")?.Element("host");
        if (type == "network" && (string?)host?.Attribute("socket") == socket)
        {
            log($"disk {target} of '{o.Domain}' is already behind {socket}");
            return;
        }
        if (type is not ("file" or "block"))
            throw new HypervisorException($"adopt: disk {target} of '{o.Domain}' is a '{type}' disk; only file and block disks can be adopted");
        if (!File.Exists(socket) && !Directory.Exists(Path.GetDirectoryName(socket)))
            throw new HypervisorException($"adopt: no shim socket {socket}: start the shim on the new image first (blockmigrate-shim@NAME)");
        var format = (string?)disk.Element("driver")?.Attribute("type") ?? "raw";
        var backing = disk.Element("backingStore");
        var hasBacking = backing?.Element("source") != null;
        var shallow = o.Shallow ?? hasBacking;
        var xml = new XElement("disk", new XAttribute("type", "network"), new XAttribute("device", (string?)disk.Attribute("device") ?? "disk"),
            new XElement("driver", new XAttribute("name", "qemu"), new XAttribute("type", format)),
            new XElement("source", new XAttribute("protocol", "nbd"), new XElement("host", new XAttribute("transport", "unix"), new XAttribute("socket", socket))));
        if (shallow)
        {
            // name the backing chain explicitly: libvirt cannot read it from an NBD target, and without it QEMU
            // opens the new top image with "backing": null (reads of what the top does not hold return zeros)
            if (!hasBacking)
                throw new HypervisorException($"adopt: disk {target} of '{o.Domain}' has no backing file; --shallow needs one");
            xml.Add(WithoutIndexes(new XElement(backing!)));
        }
        var args = new List<string> { "blockcopy", o.Domain, target, "--xml", "", "--reuse-external", "--transient-job", "--wait", "--pivot", "--verbose",
            "--timeout", ((int)o.CopyTimeout.TotalSeconds).ToString(CultureInfo.InvariantCulture) };
        if (shallow) args.Add("--shallow");
        await CopyAsync(virsh, o, args, xml, $"{target}: {Describe(disk)} -> nbd unix socket {socket} ({format}{(shallow ? ", top image only: the backing file stays" : "")})", log, ct);
        await UpdateDefinitionAsync(virsh, o.Domain, target, xml, log, ct);
    }

    public static async Task ReleaseAsync(LibvirtAdoptOptions o, Action<string> log, CancellationToken ct)
    {
        if (o.File is not { } file || !file.StartsWith('/'))
            throw new HypervisorException("release: --file must be an absolute path");
        var virsh = new Virsh(o.Virsh, o.Connect, TimeSpan.FromSeconds(60));
        var (disk, target) = await FindDiskAsync(virsh, o, ct);
        if ((string?)disk.Attribute("type") != "network" || (string?)disk.Element("source")?.Attribute("protocol") != "nbd")
            throw new HypervisorException($"release: disk {target} of '{o.Domain}' ({Describe(disk)}) is not behind the shim");
        if (!o.ReuseFile && File.Exists(file))
            throw new HypervisorException($"release: {file} exists; remove it, or pass --reuse-file to copy into it");
        var format = (string?)disk.Element("driver")?.Attribute("type") ?? "raw";
        var backing = disk.Element("backingStore");
        var shallow = o.Shallow ?? backing?.Element("source") != null;
        var xml = new XElement("disk", new XAttribute("type", "file"), new XAttribute("device", (string?)disk.Attribute("device") ?? "disk"),
            new XElement("driver", new XAttribute("name", "qemu"), new XAttribute("type", format)),
            new XElement("source", new XAttribute("file", file)));
        if (shallow && backing?.Element("source") != null) xml.Add(WithoutIndexes(new XElement(backing)));
        var args = new List<string> { "blockcopy", o.Domain, target, "--xml", "", "--transient-job", "--wait", "--pivot", "--verbose",
            "--timeout", ((int)o.CopyTimeout.TotalSeconds).ToString(CultureInfo.InvariantCulture) };
        if (o.ReuseFile) args.Add("--reuse-external");
        if (shallow) args.Add("--shallow");
        await CopyAsync(virsh, o, args, xml, $"{target}: {Describe(disk)} -> {file} ({format})", log, ct);
        await UpdateDefinitionAsync(virsh, o.Domain, target, xml, log, ct);
    }

    private static async Task CopyAsync(Virsh virsh, LibvirtAdoptOptions o, List<string> args, XElement xml, string what, Action<string> log, CancellationToken ct)
    {
        var dir = LibvirtTempDir.Create("adopt", log);
        try
        {
            var path = Path.Combine(dir, "disk.xml");
            await File.WriteAllTextAsync(path, xml.ToString(), ct);
            args[args.IndexOf("--xml") + 1] = path;
            log($"block copy {what}");
            var r = await virsh.RunAsync(args, ct, o.CopyTimeout + TimeSpan.FromMinutes(1));
            if (r.ExitCode != 0)
            {
                await virsh.RunAsync(["blockjob", o.Domain, args[2], "--abort"], CancellationToken.None); // the domain stays on its old disk
                var qcow2 = (string?)xml.Element("driver")?.Attribute("type") == "qcow2" && xml.Attribute("type")?.Value == "network"
                    ? " (a qcow2 image behind the shim must be made with qemu-img create -o preallocation=metadata, plus extended_l2=on with a backing file: an NBD export cannot grow)" : "";
                throw new HypervisorException($"libvirt: {virsh.Describe(["blockcopy", o.Domain, args[2], "..."])} failed (the domain stays on its old disk): {Virsh.LastLine(r.StandardError)}{qcow2}");
            }
            log($"pivoted: disk {args[2]} of '{o.Domain}' is now {Describe(xml)}");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    private static async Task<(XElement Disk, string Target)> FindDiskAsync(Virsh virsh, LibvirtAdoptOptions o, CancellationToken ct)
    {
        var state = await virsh.StateAsync(o.Domain, ct) ?? throw new HypervisorException($"libvirt: no domain '{o.Domain}'");
        if (state is not ("running" or "paused"))
            throw new HypervisorException($"libvirt: domain '{o.Domain}' is '{state}': adopt and release work on a running domain (for one that is shut off, edit its disk with virsh edit)");
        var doc = LibvirtDomainXml.Parse(await virsh.CheckAsync(["dumpxml", o.Domain], ct));
        var disks = (doc.Root?.Element("devices")?.Elements("disk") ?? []).Where(d =>
            d.Element("readonly") == null && (string?)d.Attribute("device") is null or "disk").ToList();
        var disk = o.Target != null
            ? disks.FirstOrDefault(d => (string?)d.Element("target")?.Attribute("dev") == o.Target)
                ?? throw new HypervisorException($"libvirt: domain '{o.Domain}' has no writable disk {o.Target}")
            : disks.Count == 1 ? disks[0]
            : throw new HypervisorException($"libvirt: domain '{o.Domain}' has {disks.Count} writable disks; name one with --target");
        return (disk, (string?)disk.Element("target")?.Attribute("dev") ?? "?");
    }

    /// <summary>A persistent domain's definition follows the pivot (libvirt changes only the live one with --transient-job).</summary>
    private static async Task UpdateDefinitionAsync(Virsh virsh, string domain, string target, XElement newDisk, Action<string> log, CancellationToken ct)
    {
        var persistent = await virsh.RunAsync(["dominfo", domain], ct);
        if (!persistent.StandardOutput.Split('\n').Any(l => l.StartsWith("Persistent:", StringComparison.Ordinal) && l.Contains("yes", StringComparison.Ordinal)))
            return;
        var doc = LibvirtDomainXml.Parse(await virsh.CheckAsync(["dumpxml", "--inactive", "--security-info", domain], ct));
        var disk = doc.Root?.Element("devices")?.Elements("disk").FirstOrDefault(d => (string?)d.Element("target")?.Attribute("dev") == target);
        if (disk == null) return;
        disk.SetAttributeValue("type", newDisk.Attribute("type")!.Value);
        disk.Element("source")?.Remove();
        disk.Element("backingStore")?.Remove();
        disk.Element("driver")?.SetAttributeValue("type", newDisk.Element("driver")!.Attribute("type")!.Value);
        disk.AddFirst(new XElement(newDisk.Element("source")!));
        if (newDisk.Element("backingStore") is { } b) disk.Element("source")!.AddAfterSelf(new XElement(b));
        var dir = LibvirtTempDir.Create("adopt", log);
        try
        {
            var path = Path.Combine(dir, "domain.xml");
            await File.WriteAllTextAsync(path, doc.ToString(), ct);
            await virsh.CheckAsync(["define", path], ct);
            log($"the persistent definition of '{domain}' now has disk {target} = {Describe(newDisk)}");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    private static XElement WithoutIndexes(XElement e)
    {
        foreach (var x in e.DescendantsAndSelf()) x.Attribute("index")?.Remove();
        return e;
    }

    private static string Describe(XElement disk)
    {
        var s = disk.Element("source");
        return (string?)s?.Attribute("file") ?? (string?)s?.Attribute("dev")
            ?? ((string?)s?.Element("host")?.Attribute("socket") is { } sock ? $"nbd unix socket {sock}" : "?");
    }
}
