using System.Xml.Linq;
using BlockMigrate.Engine;
using BlockMigrate.Files;
using BlockMigrate.Receiver;

namespace BlockMigrate.Hypervisors.Libvirt;

/// <summary>
/// One disk of the shim as its file <c>/etc/blockmigrate/disks/NAME.conf</c> describes it (the
/// <c>EnvironmentFile=</c> of <c>blockmigrate-shim@NAME</c>): the image it serves, its dirty map and its
/// socket, with the unit's defaults for the last two.
/// </summary>
public sealed record ShimDiskConfig(string Name, string Image, string Map, string Socket, string File, string? Problem);

/// <summary>A shim disk of the domain: its target (vda), the socket its QEMU reads it from, and what the engine copies.</summary>
public sealed record LibvirtShimDisk(string Target, string Socket, DiskSpec Disk);

/// <summary>
/// Which disks a libvirt migration moves, from the domain's XML and the shim's conventions, so that
/// <c>--disk</c> is not needed: each writable disk of the domain must be an NBD unix socket that a shim
/// disk file names (its <c>SOCKET=</c>, default <c>/run/blockmigrate/NAME.sock</c>); the engine then copies
/// that file's <c>IMAGE=</c> through its <c>DIRTYMAP=</c> (default <c>/dev/shm/blockmigrate/NAME.map</c>) as
/// disk NAME. The paths come from root's files, never from the XML (which anyone allowed to edit the domain
/// writes); a socket no shim disk file names exactly (elsewhere, <c>..</c> in it, another name) is refused
/// by disk. Explicit <c>--disk</c> entries are still taken, and must agree: one per shim disk, named by the
/// shim disk's NAME or by its target, with the image and map of its file when it has one.
/// </summary>
public static class LibvirtShimDisks
{
    public const string DefaultConfigDir = "/etc/blockmigrate/disks";
    /// <summary>The unit's defaults (packaging/systemd/blockmigrate-shim@.service).</summary>
    public const string DefaultSocketDir = "/run/blockmigrate";
    public const string DefaultMapDir = "/dev/shm/blockmigrate";

    /// <summary>Every <c>NAME.conf</c> in <paramref name="dir"/> whose NAME is a usable disk name (none when the directory is absent).</summary>
    public static IReadOnlyList<ShimDiskConfig> ReadConfigs(string dir)
    {
        if (!Directory.Exists(dir)) return [];
        var list = new List<ShimDiskConfig>();
        foreach (var file in Directory.EnumerateFiles(dir, "*.conf").Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileNameWithoutExtension(file);
            if (!DiskName.IsValid(name)) continue;
            // root's configuration: a file someone else could have written is named, not used
            var problem = StrictModes.TrustFileProblem(file, "shim disk file");
            var values = problem == null ? ParseEnvironmentFile(File.ReadAllText(file)) : new Dictionary<string, string>();
            var image = values.GetValueOrDefault("IMAGE");
            if (problem == null && (image == null || !image.StartsWith('/')))
                problem = $"shim disk file {file}: IMAGE= is {(image == null ? "not set" : $"'{image}', not an absolute path")}";
            list.Add(new ShimDiskConfig(name, image ?? "", values.GetValueOrDefault("DIRTYMAP") ?? $"{DefaultMapDir}/{name}.map",
                values.GetValueOrDefault("SOCKET") ?? $"{DefaultSocketDir}/{name}.sock", file, problem));
        }
        return list;
    }

    /// <summary>systemd's EnvironmentFile= lines: <c>KEY=value</c>, # and ; comments, a value in single or double quotes.</summary>
    public static Dictionary<string, string> ParseEnvironmentFile(string text)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line[0] is '#' or ';') continue;
            var eq = line.IndexOf('=');
            if (eq < 1) continue;
            var value = line[(eq + 1)..].Trim();
            if (value.Length >= 2 && value[0] is '"' or '\'' && value[^1] == value[0]) value = value[1..^1];
            values[line[..eq].Trim()] = value;
        }
        return values;
    }

    /// <summary>
    /// The disks to move, from the domain's XML (see the class). <paramref name="given"/>: the <c>--disk</c>
    /// entries, empty to derive them all. Every problem is one <see cref="HypervisorException"/> naming the disk.
    /// </summary>
    public static IReadOnlyList<LibvirtShimDisk> Resolve(XDocument doc, string domain, IReadOnlyList<ShimDiskConfig> configs, string configDir,
        IReadOnlyList<DiskSpec> given)
    {
        var shim = LibvirtDomainXml.ShimDisks(doc, domain);
        if (shim.Count == 0)
            throw new HypervisorException($"libvirt: domain '{domain}' has no writable disk: nothing for blockmigrate to move");
        var list = new List<LibvirtShimDisk>();
        var unused = given.ToList();
        foreach (var d in shim)
        {
            var socket = d.Socket ?? "";
            var what = $"disk {d.Target} of domain '{domain}' (nbd unix socket {socket})";
            if (shim.Count(o => o.Socket == socket) > 1)
                throw new HypervisorException($"libvirt: {what} is the socket of another of its disks too");
            var matches = configs.Where(c => c.Socket == socket).ToList();
            if (matches.Count > 1)
                throw new HypervisorException($"libvirt: {what}: more than one shim disk file names that socket ({string.Join(", ", matches.Select(c => c.File))})");
            var config = matches.FirstOrDefault();
            if (config?.Problem is { } problem)
                throw new HypervisorException($"libvirt: {what}: {problem}");
            DiskSpec disk;
            if (given.Count == 0)
            {
                if (config == null)
                    throw new HypervisorException(
                        $"libvirt: {what} is not a socket of the blockmigrate shim: no shim disk file in {configDir} names it " +
                        $"(SOCKET=, default {DefaultSocketDir}/NAME.sock for {configDir}/NAME.conf); serve the disk with blockmigrate-shim@NAME, " +
                        "or name its image and map with --disk");
                disk = new DiskSpec(config.Name, config.Image, config.Map);
            }
            else
            {
                var mine = unused.Where(g => g.Name == config?.Name || g.Name == d.Target).ToList();
                if (mine.Count != 1)
                    throw new HypervisorException(
                        $"libvirt: {what}: {(mine.Count == 0 ? "no" : "more than one")} --disk names it (by its target {d.Target}" +
                        $"{(config != null ? $" or its shim disk {config.Name}" : "")}); with --disk, every disk behind the shim is named once");
                disk = mine[0];
                unused.Remove(disk);
                if (config != null && (disk.ImagePath != config.Image || disk.MapPath != config.Map))
                    throw new HypervisorException(
                        $"libvirt: --disk {disk.Name}={disk.ImagePath}:{disk.MapPath} disagrees with {what}: its shim serves {config.Image} " +
                        $"with the map {config.Map} ({config.File})");
            }
            list.Add(new LibvirtShimDisk(d.Target, socket, disk));
        }
        if (unused.Count > 0)
            throw new HypervisorException(
                $"libvirt: --disk {unused[0].Name} is not a disk of domain '{domain}' behind the shim (it has {string.Join(", ", list.Select(l => $"{l.Target}: {l.Socket}"))})");
        return list;
    }

    /// <summary>
    /// <see cref="Resolve"/> on the domain's live XML at the source. When the source has no such domain and
    /// the destination has it paused (an earlier run moved its memory: <see cref="LibvirtHypervisor"/> finishes
    /// the disks), the destination's XML stands in; it names the destination's sockets, which are the source's
    /// only for targets without <c>--destination-socket</c>.
    /// </summary>
    public static async Task<IReadOnlyList<LibvirtShimDisk>> ResolveAsync(LibvirtOptions o, IReadOnlyList<DiskSpec> given, CancellationToken ct)
    {
        var source = new Virsh(o.Virsh, o.Connect, o.CommandTimeout);
        var configs = ReadConfigs(o.DiskConfigDir);
        if (await source.StateAsync(o.Domain, ct) != null)
            return Resolve(LibvirtDomainXml.Parse(await source.CheckAsync(["dumpxml", "--migratable", o.Domain], ct)), o.Domain, configs, o.DiskConfigDir, given);
        var destination = new Virsh(o.Virsh, o.DestinationConnect, o.CommandTimeout);
        if (await destination.StateAsync(o.Domain, ct) != "paused")
            throw new HypervisorException($"libvirt: no domain '{o.Domain}' at the source ({source.Describe(["domstate", o.Domain])})");
        var doc = LibvirtDomainXml.Parse(await destination.CheckAsync(["dumpxml", "--migratable", o.Domain], ct));
        if (given.Count == 0 && o.DestinationSockets.Count > 0)
            throw new HypervisorException(
                $"libvirt: '{o.Domain}' is paused at the destination and gone at the source (an earlier run moved its memory); its XML there names " +
                $"the destination's sockets, not the source's: give its disks with --disk NAME=IMAGE:MAP");
        return Resolve(doc, o.Domain, configs, o.DiskConfigDir, given);
    }

    /// <summary>The same disks (targets and sockets) as <paramref name="expected"/>, else a one-line error: checked again by Prepare.</summary>
    internal static void CheckUnchanged(XDocument doc, string domain, IReadOnlyList<LibvirtShimDisk> expected)
    {
        var now = LibvirtDomainXml.ShimDisks(doc, domain).Select(d => $"{d.Target}: {d.Socket}").Order(StringComparer.Ordinal).ToList();
        var then = expected.Select(d => $"{d.Target}: {d.Socket}").Order(StringComparer.Ordinal).ToList();
        if (!now.SequenceEqual(then))
            throw new HypervisorException($"libvirt: the disks of domain '{domain}' changed while migrate started ({string.Join(", ", then)} -> {string.Join(", ", now)}); run it again");
    }
}
