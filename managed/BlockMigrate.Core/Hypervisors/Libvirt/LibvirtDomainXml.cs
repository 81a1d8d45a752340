using System.Xml;
using System.Xml.Linq;

namespace BlockMigrate.Hypervisors.Libvirt;

/// <summary>One disk of a domain: its target (vda), and the NBD unix socket it is served from, or what else it is.</summary>
public sealed record LibvirtDisk(string Target, string? Socket, string Description, bool ReadOnly, string? Format);

/// <summary>
/// The parts of a libvirt domain XML the adapter needs (System.Xml.Linq: AOT-safe, no reflection). A disk
/// is "behind the shim" when it is <c>&lt;disk type='network'&gt;&lt;source protocol='nbd'&gt;&lt;host
/// transport='unix' socket='…'/&gt;</c>; anything else that the guest can write is refused by name.
/// </summary>
public static class LibvirtDomainXml
{
    public static XDocument Parse(string xml)
    {
        try
        {
            // no DTD, no external entities: the text comes from virsh, but treat it as any input
            using var reader = XmlReader.Create(new StringReader(xml), new XmlReaderSettings { DtdProcessing = DtdProcessing.Prohibit, XmlResolver = null });
            return XDocument.Load(reader);
        }
        catch (XmlException e)
        {
            throw new HypervisorException($"libvirt: the domain XML does not parse: {e.Message}");
        }
    }

    public static IReadOnlyList<LibvirtDisk> Disks(XDocument doc)
    {
        var list = new List<LibvirtDisk>();
        foreach (var disk in doc.Root?.Element("devices")?.Elements("disk") ?? [])
        {
            var target = (string?)disk.Element("target")?.Attribute("dev") ?? "?";
            var device = (string?)disk.Attribute("device") ?? "disk";
            var readOnly = disk.Element("readonly") != null || device is "cdrom" or "floppy";
            var format = (string?)disk.Element("driver")?.Attribute("type");
            var type = (string?)disk.Attribute("type") ?? "?";
            var source = disk.Element("source");
            string? socket = null;
            string description;
            if (type == "network" && (string?)source?.Attribute("protocol") == "nbd")
            {
                var host = source!.Element("host");
                if ((string?)host?.Attribute("transport") == "unix")
                {
                    socket = (string?)host!.Attribute("socket");
                    description = $"nbd unix socket {socket}";
                }
                else description = $"nbd over {(string?)host?.Attribute("transport") ?? "tcp"} {(string?)host?.Attribute("name")}";
            }
            else
            {
                var what = (string?)source?.Attribute("file") ?? (string?)source?.Attribute("dev") ?? (string?)source?.Attribute("name")
                    ?? (string?)source?.Attribute("volume") ?? "no source";
                description = $"{type} {what}";
            }
            list.Add(new LibvirtDisk(target, socket, description, readOnly, format));
        }
        return list;
    }

    /// <summary>The writable disks, each behind the shim, else a one-line error naming the first that is not.</summary>
    public static IReadOnlyList<LibvirtDisk> ShimDisks(XDocument doc, string domain)
    {
        var writable = Disks(doc).Where(d => !d.ReadOnly).ToList();
        foreach (var d in writable)
            if (d.Socket == null)
                throw new HypervisorException(
                    $"libvirt: disk {d.Target} of domain '{domain}' ({d.Description}) is not behind the blockmigrate shim (an NBD unix socket); " +
                    $"put it there first: blockmigrate adopt --domain {domain} --target {d.Target} ...");
        return writable;
    }

    /// <summary>The same XML with each shim disk's socket replaced by the destination's (by target); others unchanged.</summary>
    public static string WithSockets(XDocument doc, IReadOnlyDictionary<string, string> socketsByTarget)
    {
        var copy = new XDocument(doc);
        foreach (var disk in copy.Root?.Element("devices")?.Elements("disk") ?? [])
        {
            var target = (string?)disk.Element("target")?.Attribute("dev");
            var host = disk.Element("source")?.Element("host");
            if (target != null && host != null && (string?)host.Attribute("transport") == "unix" && socketsByTarget.TryGetValue(target, out var socket))
                host.SetAttributeValue("socket", socket);
        }
        return copy.ToString();
    }
}
