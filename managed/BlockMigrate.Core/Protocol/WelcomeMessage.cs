namespace BlockMigrate.Protocol;

/// <summary>The receiver's answer to <see cref="HelloMessage"/>, one entry per disk in the same order.</summary>
public sealed record WelcomeMessage(IReadOnlyList<DiskAnswer> Disks);
