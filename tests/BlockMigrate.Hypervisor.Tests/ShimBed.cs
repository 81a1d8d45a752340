using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>
/// A <see cref="TwoHostBed"/> with shims, under the names the whole-VM tests use: the beds of
/// <see cref="WholeVmTestbed"/> and <see cref="FaultBed"/> add their own parts on top of it.
/// </summary>
public abstract class ShimBed(TwoHostBed bed) : IDisposable
{
    protected TwoHostBed Bed { get; } = bed;
    public TempDir Dir => Bed.Dir;
    public KeyPair Keys => Bed.Keys;
    public string SourceImage => Bed.SourceImage;
    public string SourceMap => Bed.SourceMap;
    public string ImageDir => Bed.ImageDir;
    public string GateDir => Bed.GateDir;
    public string DestinationImage => Bed.DestinationImage;
    public string DestinationMap => Bed.DestinationMap;
    public NbdkitServer SourceShim => Bed.SourceDisk;
    public NbdkitServer DestinationShim => Bed.DestinationDisk;
    public QemuGuest Source => Bed.Source;

    /// <summary>The random fill (the part of the disk the guest does not write) equals the source's.</summary>
    public bool FillMatches() => Bed.FillMatches();

    public T Own<T>(T d) where T : IDisposable => Bed.Own(d);

    public void Dispose() => Bed.Dispose();
}
