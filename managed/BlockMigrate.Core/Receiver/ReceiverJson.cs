using System.Text.Json.Serialization;

namespace BlockMigrate.Receiver;

/// <summary>JSON of the receiver's state files (source-generated for AOT).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true)]
[JsonSerializable(typeof(ReceiverState))]
internal sealed partial class ReceiverJson : JsonSerializerContext;
