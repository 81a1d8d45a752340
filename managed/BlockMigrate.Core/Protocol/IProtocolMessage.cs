namespace BlockMigrate.Protocol;

/// <summary>
/// A control message decoded from JSON. JSON may leave out or null any member, so every message says
/// after decoding whether it is whole; <see cref="ProtocolJson.Decode{T}"/> refuses one that is not.
/// </summary>
public interface IProtocolMessage
{
    /// <summary>Throws <see cref="ProtocolException"/> naming the first missing member.</summary>
    void Validate();
}
