using Hypervisor.Protocol.Share;

namespace Hypervisor.Protocol.Tests.Share;

public class VirtiofsdOptionsTests
{
    [Fact]
    public void ItemsApplyInOrderAndTranslateVirtiofsdNames()
    {
        var o = new VirtiofsdOptions();
        Assert.True(o.TryApply("source=/srv/a,cache=none,xattr,no_xattr,readonly,log_level=err", out _));
        Assert.True(o.TryApply("writeback,allow_direct_io,flock,sandbox=chroot", out _));
        Assert.Equal("/srv/a", o.Source);
        Assert.Equal("never", o.Cache);
        Assert.Equal("error", o.LogLevel);
        Assert.False(o.XAttr);
        Assert.True(o.ReadOnly);
        Assert.True(o.Writeback);
        Assert.True(o.AllowDirectIo);
        Assert.Equal(["flock", "sandbox=chroot"], o.Ignored);
    }

    [Fact]
    public void NotGivenStaysNull()
    {
        var o = new VirtiofsdOptions();
        Assert.True(o.TryApply("source=/x", out _));
        Assert.Null(o.Cache);
        Assert.Null(o.XAttr);
        Assert.Null(o.Writeback);
    }

    [Theory]
    [InlineData("bogus", "-o bogus is not a known option")]
    [InlineData("source=", "-o source= is not a known option")]
    [InlineData("xattr,cache", "-o cache is not a known option")]
    public void UnknownItemsAreNamed(string group, string expected)
    {
        Assert.False(new VirtiofsdOptions().TryApply(group, out var error));
        Assert.StartsWith(expected, error);
        Assert.Contains("source=DIR", error);
    }
}
