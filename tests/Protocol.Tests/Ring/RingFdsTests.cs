using Hypervisor.Protocol.Ring;

namespace Hypervisor.Protocol.Tests.Ring;

public class RingFdsTests
{
    [Fact]
    public void Format_ListsMemfdQueueCountAndEachQueuesFourDoorbells()
    {
        var fds = new RingFds(5, new[] { 6, 7, 8, 9, 10, 11, 12, 13 });
        Assert.Equal("memfd=5,queues=2,sq0=6,sqf0=7,cq0=8,cqf0=9,sq1=10,sqf1=11,cq1=12,cqf1=13", fds.ToString());
        Assert.Equal(12, fds.Doorbell(1, completion: true, freed: false));
        Assert.Equal(7, fds.Doorbell(0, completion: false, freed: true));
    }

    [Fact]
    public void Named_ListsEveryDescriptorWithItsKey()
    {
        var fds = RingFds.Parse("memfd=5,queues=2,sq0=6,sqf0=7,cq0=8,cqf0=9,cqf1=13,cq1=12,sqf1=11,sq1=10");
        Assert.Equal(
            [(5, "memfd"), (6, "sq0"), (7, "sqf0"), (8, "cq0"), (9, "cqf0"), (10, "sq1"), (11, "sqf1"), (12, "cq1"), (13, "cqf1")],
            fds.Named());
    }

    [Fact]
    public void Parse_AcceptsAnyOrderAndRoundTrips()
    {
        var fds = RingFds.Parse("cqf0=9,cq0=8,queues=1,memfd=5,sqf0=7,sq0=6");
        Assert.Equal(5, fds.MemFd);
        Assert.Equal(1, fds.QueueCount);
        Assert.Equal(new[] { 6, 7, 8, 9 }, fds.Doorbells);
        Assert.Equal("memfd=5,queues=1,sq0=6,sqf0=7,cq0=8,cqf0=9", RingFds.Parse(fds.ToString()).ToString());
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("memfd=5,queues=1,sq0=6,sqf0=7,cq0=8", "lacks cqf0=")]
    [InlineData("queues=1,sq0=6,sqf0=7,cq0=8,cqf0=9", "lacks memfd=")]
    [InlineData("memfd=5,queues=0", "queues=N")]
    [InlineData("memfd=5,queues=65", "queues=N")]
    [InlineData("memfd=5,queues=1,sq0=6,sqf0=7,cq0=8,cqf0=9,sq1=10", "unknown item 'sq1'")]
    [InlineData("memfd=5,memfd=6,queues=1,sq0=6,sqf0=7,cq0=8,cqf0=9", "twice")]
    [InlineData("memfd=-5,queues=1,sq0=6,sqf0=7,cq0=8,cqf0=9", "not KEY=NUMBER")]
    [InlineData("memfd5,queues=1", "not KEY=NUMBER")]
    public void TryParse_RejectsMalformedDescriptorsWithAReason(string text, string reason)
    {
        Assert.False(RingFds.TryParse(text, out var fds, out var error));
        Assert.Null(fds);
        Assert.Contains(reason, error);
        Assert.EndsWith(".", error);
        var e = Assert.Throws<FormatException>(() => RingFds.Parse(text));
        Assert.Equal(error, e.Message);
    }
}
