namespace BlockMigrate.Cli.Status;

/// <summary>What <c>blockmigrate status --json</c> prints.</summary>
public sealed record StatusListing(IReadOnlyList<MigrationStatus> Migrations);
