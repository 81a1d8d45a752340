namespace BlockMigrate.Network;

/// <summary>Why the tunnel was removed.</summary>
public enum TunnelRemovalReason
{
    /// <summary>Conntrack on the source host showed no live connection to or from the old address.</summary>
    Drained,
    /// <summary>The tunnel timeout passed with connections still open.</summary>
    Timeout,
    /// <summary>The redirection was aborted.</summary>
    Aborted,
    /// <summary>Building the tunnel failed; what had been built was removed.</summary>
    SetupFailed,
}
