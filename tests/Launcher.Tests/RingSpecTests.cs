namespace Hypervisor.Launcher.Tests;

public class RingSpecTests
{
    [Fact]
    public void NamesEveryDescriptorOfTheRing_WithItsRole()
    {
        Assert.True(RingSpec.TryGetFds("memfd=5,queues=2,sq0=6,sqf0=7,cq0=8,cqf0=9,cqf1=13,cq1=12,sqf1=11,sq1=10", out var fds, out var error), error);
        Assert.Equal(
            new RingSpec.NamedFd[]
            {
                new(5, "memfd"), new(6, "sq0"), new(7, "sqf0"), new(8, "cq0"), new(9, "cqf0"),
                new(10, "sq1"), new(11, "sqf1"), new(12, "cq1"), new(13, "cqf1"),
            },
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
