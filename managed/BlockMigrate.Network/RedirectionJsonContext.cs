using System.Text.Json.Serialization;

namespace BlockMigrate.Network;

/// <summary>Source-generated JSON metadata for <see cref="RedirectionReport"/>: camelCase names, enums by name,
/// nulls left out. The CLI's own context can include <see cref="RedirectionReport"/>
/// with the same options.</summary>
[JsonSourceGenerationOptions(
    WriteIndented = true,
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    UseStringEnumConverter = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(RedirectionReport))]
public sealed partial class RedirectionJsonContext : JsonSerializerContext;
