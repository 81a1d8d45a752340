namespace BlockMigrate.Protocol;

/// <summary>
/// The source's opening: protocol version and the disks it brings. <c>MemoryKey</c> (optional): the
/// pre-shared key (64 hex digits) made for this migration's memory stream, which the hypervisor (QEMU)
/// encrypts and authenticates with TLS; the receiver writes it where the destination hypervisor reads
/// it and names that directory in <see cref="WelcomeMessage.MemoryKeyDir"/>.
/// </summary>
public sealed record HelloMessage(int Version, IReadOnlyList<DiskOffer> Disks, string? MemoryKey = null) : IProtocolMessage
{
    public const int CurrentVersion = 1;

    /// <summary>Every field checked (<see cref="MessageChecks"/>): JSON may null or leave out any member.</summary>
    public void Validate() => MessageChecks.Check(this);
}
