using Microsoft.Win32.SafeHandles;

namespace BlockMigrate.Interop;

/// <summary>Owns one <c>bm_map *</c>: the mapping and its file descriptor, closed exactly once.</summary>
internal sealed class DirtyMapHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public DirtyMapHandle() : base(ownsHandle: true) { }

    protected override bool ReleaseHandle()
    {
        NativeMethods.MapClose(handle);
        return true;
    }
}
