namespace BlockMigrate.Maps;

/// <summary>The map's state flags (BM_STATE_* in dirtymap.h).</summary>
[Flags]
public enum MapState : uint
{
    None = 0,
    Tracking = 0x1,
    Frozen = 0x2,
    Gate = 0x4,
    GateAll = 0x8,
}
