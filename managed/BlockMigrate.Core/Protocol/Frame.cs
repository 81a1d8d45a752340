namespace BlockMigrate.Protocol;

/// <summary>One frame as read from the wire: its type, its sequence number and its checked payload.</summary>
public sealed record Frame(FrameType Type, ulong Sequence, byte[] Payload);
