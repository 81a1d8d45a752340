namespace BlockMigrate.Network;

/// <summary>Outcome of the dynamic DNS update.</summary>
public enum DnsUpdateStatus
{
    /// <summary>The primary accepted the signed update.</summary>
    Updated,
    /// <summary>The server answered REFUSED (no key, or the update-policy does not allow it).</summary>
    Refused,
    /// <summary>The server answered NOTAUTH (bad TSIG signature, unknown key, or not authoritative for the zone).</summary>
    NotAuthorized,
    /// <summary>No answer: the request timed out or the server's port was closed.</summary>
    Unreachable,
    /// <summary>The key file was refused before sending (missing or readable by others).</summary>
    KeyRejected,
    /// <summary>Any other failure (nsupdate missing, bad name, server error).</summary>
    Failed,
}
