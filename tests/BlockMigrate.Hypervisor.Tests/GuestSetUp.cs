using BlockMigrate.TestSupport;

namespace BlockMigrate.Hypervisor.Tests;

/// <summary>Builds the test guest (kernel + initramfs) once for the whole assembly.</summary>
[SetUpFixture]
public sealed class GuestSetUp
{
    [OneTimeSetUp]
    public async Task BuildGuest() => await GuestImage.EnsureBuiltAsync();
}
