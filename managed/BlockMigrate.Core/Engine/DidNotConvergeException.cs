namespace BlockMigrate.Engine;

/// <summary>The dirty rounds hit their limit with more left than fits the downtime target.</summary>
public sealed class DidNotConvergeException(string message) : MigrationException(message);
