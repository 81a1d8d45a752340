using System.Text.Json.Nodes;

namespace BlockMigrate.Hypervisors.Qemu;

/// <summary>
/// An asynchronous QMP event (STOP, RESUME, MIGRATION, BLOCK_JOB_READY, ...). <see cref="Timestamp"/>
/// is QEMU's own (wall clock of the QEMU host when the event happened), not when we read it.
/// </summary>
public sealed record QmpEvent(string Name, JsonObject? Data, DateTimeOffset Timestamp)
{
    /// <summary>A string member of <c>data</c>, e.g. <c>status</c> of a MIGRATION event.</summary>
    public string? DataString(string member) =>
        Data?[member] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
}
