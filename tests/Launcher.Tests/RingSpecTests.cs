namespace Hypervisor.Launcher.Tests;

public class RingSpecTests
{
    [Fact]
    public void NamesEveryDescriptorOfTheRing_WithItsRole()
    {
        Assert.True(RingSpec.TryGetFds("memfd=5,queues=2,sq0=6,cq0=7,sq1=8,cq1=9", out var fds, out var error), error);
        Assert.Equal(
            new RingSpec.NamedFd[] { new(5, "memfd"), new(6, "sq0"), new(7, "cq0"), new(8, "sq1"), new(9, "cq1") },
            fds);
    }

    [Fact]
    public void Malformed_GivesTheParsersReason()
    {
        Assert.False(RingSpec.TryGetFds("memfd=5", out var fds, out var error));
        Assert.Empty(fds);
        Assert.Contains("queues=N", error);
    }
}
