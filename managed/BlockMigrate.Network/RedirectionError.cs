namespace BlockMigrate.Network;

/// <summary>One failure during redirection: the step ("prepare", "tunnel", "dns", "drain", "teardown"),
/// a one-line message saying what failed and what to do, and when.</summary>
public sealed record RedirectionError(string Step, string Message, DateTimeOffset At);
