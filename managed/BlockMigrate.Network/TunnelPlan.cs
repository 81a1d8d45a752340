using System.Net;

namespace BlockMigrate.Network;

/// <summary>
/// The names and numbers one tunnel uses, all derived from the tunnel id N so that they are ours and
/// predictable: link bmtunN on both hosts, VXLAN VNI / GRE key 0xB10000+N, routing table
/// (45056+N by default), an overlay /30 in 169.254.0.0/18 (source .1, destination .2), and the nft chain
/// tN in our table "inet blockmigrate".
/// </summary>
internal sealed record TunnelPlan(
    int Id, string Link, int Vni, int Table, int RulePriority,
    IPAddress OverlaySource, IPAddress OverlayDestination, string NftChain, IPAddress OldAddress)
{
    public const string NftTable = "blockmigrate";

    public static TunnelPlan From(RedirectionOptions o)
    {
        int id = o.EffectiveTunnelId;
        int b = id * 4;   // /30 blocks; ids up to 4095 stay inside 169.254.0.0/18, far from .169.254
        var src = new IPAddress(new byte[] { 169, 254, (byte)(b >> 8), (byte)((b & 0xff) + 1) });
        var dst = new IPAddress(new byte[] { 169, 254, (byte)(b >> 8), (byte)((b & 0xff) + 2) });
        return new TunnelPlan(id, $"bmtun{id}", 0xB10000 + id, o.EffectiveRoutingTable, o.RulePriority,
            src, dst, $"t{id}", o.OldAddress!);
    }

    public string Old32 => $"{OldAddress}/32";
}
