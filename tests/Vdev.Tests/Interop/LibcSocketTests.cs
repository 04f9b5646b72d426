using System.Net.Sockets;
using Hypervisor.Interop;

namespace Hypervisor.Vdev.Tests.Interop;

/// <summary>Libc.BoundUnixPath: where an inherited listening socket (libvirt's --fd) is bound.</summary>
public sealed class LibcSocketTests
{
    [Fact]
    public void BoundUnixPath_OfABoundListeningSocket_IsItsPath()
    {
        var dir = Directory.CreateTempSubdirectory("hv-sockname-").FullName;
        try
        {
            var path = Path.Combine(dir, "fs0-fs.sock");
            using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            s.Bind(new UnixDomainSocketEndPoint(path));
            s.Listen(1);
            Assert.Equal(path, Libc.BoundUnixPath(s.SafeHandle));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void BoundUnixPath_OfAnUnboundSocketOrAFile_IsNull()
    {
        using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        Assert.Null(Libc.BoundUnixPath(s.SafeHandle));
        using var f = File.OpenHandle("/proc/self/status");
        Assert.Null(Libc.BoundUnixPath(f));
    }
}
