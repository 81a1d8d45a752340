using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace BlockMigrate.Protocol;

/// <summary>JSON of control frames (source-generated: the CLI is published AOT).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(HelloMessage))]
[JsonSerializable(typeof(WelcomeMessage))]
[JsonSerializable(typeof(VerifyResultMessage))]
public sealed partial class ProtocolJson : JsonSerializerContext
{
    public static byte[] Encode<T>(T value, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> info) =>
        JsonSerializer.SerializeToUtf8Bytes(value, info);

    public static T Decode<T>(Frame frame, FrameType expected, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> info)
    {
        if (frame.Type == FrameType.Error)
            throw new RemoteFailureException(PeerText.Clean(frame.Span));
        if (frame.Type != expected)
            throw new ProtocolException($"expected a {expected} frame, got {frame.Type}");
        try
        {
            var value = JsonSerializer.Deserialize(frame.Span, info) ?? throw new ProtocolException($"empty {expected} frame");
            // JSON may null or leave out any member: a message is used only whole (found by BlockMigrate.Fuzz.Tests)
            (value as IProtocolMessage)?.Validate();
            return value;
        }
        catch (Exception e) when (e is JsonException or NotSupportedException or InvalidOperationException or ArgumentException)
        {
            throw new ProtocolException($"malformed {expected} frame: {PeerText.Clean(e.Message)}");
        }
    }
}
