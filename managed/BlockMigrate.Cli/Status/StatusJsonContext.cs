using System.Text.Json.Serialization;

namespace BlockMigrate.Cli.Status;

/// <summary>Source-generated (AOT-safe) JSON for the status files and <c>status --json</c>: snake_case, as the migrate report.</summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(MigrationStatus))]
[JsonSerializable(typeof(StatusListing))]
public sealed partial class StatusJsonContext : JsonSerializerContext;
