using Hypervisor.Interop;

namespace Hypervisor.Protocol.Tests.Interop;

/// <summary><see cref="SockaddrUn"/>: a filesystem path in a <c>struct sockaddr_un</c>, as bind and connect take it.</summary>
public sealed class SockaddrUnTests
{
    [Fact]
    public void APathOfUpTo107Bytes_FitsWithItsNul_ALongerOneDoesNot()
    {
        var longest = "/" + new string('a', 106);
        Assert.Equal(110, SockaddrUn.Create(longest, out var address));
        Assert.Equal(1, address.Family); // AF_UNIX
        Assert.Equal(longest, address.FilesystemPath(110));
        Assert.Equal(-1, SockaddrUn.Create(longest + "a", out _));
        // UTF-8 bytes count, not characters: 54 two-byte characters are 108 bytes.
        Assert.Equal(-1, SockaddrUn.Create(new string('é', 54), out _));
    }

    [Fact]
    public void TheLengthCoversFamilyPathAndNul()
    {
        Assert.Equal(2 + 9 + 1, SockaddrUn.Create("/run/x.sk", out var address));
        Assert.Equal("/run/x.sk", address.FilesystemPath(2 + 9 + 1));
    }

    [Fact]
    public void UnnamedAndAbstractAddresses_HaveNoFilesystemPath()
    {
        SockaddrUn.Create("/run/x.sk", out var address);
        Assert.Null(address.FilesystemPath(2)); // unnamed: the family only
        var other = address with { Family = 10 }; // AF_INET6
        Assert.Null(other.FilesystemPath(12));
        SockaddrUn.Create("", out var empty);
        Assert.Null(empty.FilesystemPath(8)); // sun_path starts with NUL: an abstract name
    }
}
