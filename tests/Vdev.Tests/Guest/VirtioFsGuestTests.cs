using Xunit.Abstractions;

namespace Hypervisor.Vdev.Tests.Guest;

/// <summary>
/// A real Linux guest (QEMU, TCG) mounts virtio-fs shares served by a backend and exercises them;
/// every check runs in the guest (tests/guest/scenarios/*.sh) and what it left behind is checked
/// again on the host. The backend is a theory parameter: "virtiofsd" (QEMU's C reference, which
/// proves the scenario right) and "vdev" (the project's backend, which fails with a clear message
/// until it is built). Needs root, qemu-system-x86 and linux-image-cloud-amd64.
/// </summary>
[Trait("Category", "Guest")]
[Collection(GuestVm.Collection)]
public sealed class VirtioFsGuestTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("virtiofsd")]
    [InlineData("vdev")]
    public void Basic(string backend) => GuestScenarios.RunBasic(GuestBackend.ByName(backend), output.WriteLine);

    [Theory]
    [InlineData("virtiofsd", "virtiofsd")]
    [InlineData("vdev", "vdev")]
    [InlineData("virtiofsd", "vdev")]
    public void TwoShares(string first, string second) =>
        GuestScenarios.RunTwoShares(GuestBackend.ByName(first), GuestBackend.ByName(second), output.WriteLine);
}
