namespace BlockMigrate.Network;

/// <summary>The encapsulation of the tunnel from the source host to the destination host.</summary>
public enum TunnelKind
{
    /// <summary>VXLAN unless another kind was asked for and the kernels have it.</summary>
    Auto,
    /// <summary>VXLAN over UDP (default port 4789); present in every kernel we ship for.</summary>
    Vxlan,
    /// <summary>GRE with a key (kernel module ip_gre).</summary>
    Gre,
    /// <summary>IP-in-IP (kernel module ipip).</summary>
    Ipip,
    /// <summary>WireGuard (kernel module wireguard and the wg tool on both hosts).</summary>
    WireGuard,
    /// <summary>No tunnel: existing connections to the old address break at switchover.</summary>
    None,
}
