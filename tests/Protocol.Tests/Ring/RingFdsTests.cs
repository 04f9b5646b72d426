using Hypervisor.Protocol.Ring;

namespace Hypervisor.Protocol.Tests.Ring;

public class RingFdsTests
{
    [Fact]
    public void Format_ListsMemfdQueueCountAndEachQueuesDoorbells()
    {
        var fds = new RingFds(5, new[] { 6, 8 }, new[] { 7, 9 });
        Assert.Equal("memfd=5,queues=2,sq0=6,cq0=7,sq1=8,cq1=9", fds.ToString());
    }

    [Fact]
    public void Parse_AcceptsAnyOrderAndRoundTrips()
    {
        var fds = RingFds.Parse("cq1=9,sq1=8,queues=2,memfd=5,cq0=7,sq0=6");
        Assert.Equal(5, fds.MemFd);
        Assert.Equal(new[] { 6, 8 }, fds.SubmissionDoorbells);
        Assert.Equal(new[] { 7, 9 }, fds.CompletionDoorbells);
        Assert.Equal("memfd=5,queues=2,sq0=6,cq0=7,sq1=8,cq1=9", RingFds.Parse(fds.ToString()).ToString());
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("memfd=5,queues=1,sq0=6", "lacks sq0= or cq0=")]
    [InlineData("queues=1,sq0=6,cq0=7", "lacks memfd=")]
    [InlineData("memfd=5,queues=0", "queues=N")]
    [InlineData("memfd=5,queues=65", "queues=N")]
    [InlineData("memfd=5,queues=1,sq0=6,cq0=7,sq1=8", "unknown item 'sq1'")]
    [InlineData("memfd=5,memfd=6,queues=1,sq0=6,cq0=7", "twice")]
    [InlineData("memfd=-5,queues=1,sq0=6,cq0=7", "not KEY=NUMBER")]
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
