using Hypervisor.Protocol.Control;

namespace Hypervisor.Protocol.Tests.Control;

public sealed class AllowlistPathTests
{
    [Theory]
    [InlineData("docs", "docs")]
    [InlineData("docs/", "docs")]
    [InlineData("./docs//reports/.", "docs/reports")]
    [InlineData("a/b/../c", "a/c")]
    [InlineData("a/..//b", "b")]
    [InlineData("...", "...")]          // a legal file name, not a parent reference
    [InlineData("..x/y", "..x/y")]
    [InlineData("café/ünï", "café/ünï")]
    public void TryNormalize_ProducesTheLexicalNormalForm(string path, string expected)
    {
        Assert.True(AllowlistPath.TryNormalize(path, out string normalized, out string error), error);
        Assert.Equal(expected, normalized);
    }

    [Theory]
    [InlineData(null, "empty")]
    [InlineData("", "empty")]
    [InlineData("/srv/share/docs", "absolute")]
    [InlineData("..", "leaves the share root")]
    [InlineData("../sibling", "leaves the share root")]
    [InlineData("a/../..", "leaves the share root")]
    [InlineData("a/../../b", "leaves the share root")]
    [InlineData(".", "share root itself")]
    [InlineData("a/..", "share root itself")]
    [InlineData("a\0b", "NUL")]
    public void TryNormalize_RejectsPathsOutsideOrAtTheRoot(string? path, string reason)
    {
        Assert.False(AllowlistPath.TryNormalize(path, out string normalized, out string error));
        Assert.Equal(string.Empty, normalized);
        Assert.Contains(reason, error);
        Assert.EndsWith(".", error);
    }

    [Fact]
    public void TryNormalize_EnforcesNameMaxAndPathMaxInUtf8Bytes()
    {
        Assert.True(AllowlistPath.TryNormalize(new string('a', 255), out _, out _));
        Assert.False(AllowlistPath.TryNormalize(new string('a', 256), out _, out string error));
        Assert.Contains("255", error);
        // 128 two-byte characters are 256 bytes.
        Assert.False(AllowlistPath.TryNormalize(new string('é', 128), out _, out _));
        string longPath = string.Join('/', Enumerable.Repeat(new string('d', 200), 21));
        Assert.False(AllowlistPath.TryNormalize(longPath, out _, out error));
        Assert.Contains("4095", error);
    }
}
