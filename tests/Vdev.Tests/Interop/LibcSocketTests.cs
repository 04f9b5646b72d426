using System.Net.Sockets;
using Hypervisor.Interop;

namespace Hypervisor.Vdev.Tests.Interop;

/// <summary>
/// The socket calls of the interop set the vdev uses: where an inherited listening socket (libvirt's --fd) is bound,
/// descriptors passed with SCM_RIGHTS, and the file type of a socket path.
/// </summary>
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

    [Fact]
    public void SendWithFds_ReceiveWithFds_CarryTheBytesAndTheDescriptors()
    {
        var (a, b) = Pair();
        using (a) using (b)
        {
            var tag = "hv-scm-" + Guid.NewGuid().ToString("N")[..8];
            int first = Memfd(tag + "-0"), second = Memfd(tag + "-1");
            try
            {
                Assert.Equal(5, Libc.SendWithFds(a, "hello"u8, [first, second], Libc.MSG_NOSIGNAL));
                var buffer = new byte[16];
                Span<int> fds = stackalloc int[8];
                Assert.Equal(5, Libc.ReceiveWithFds(b, buffer, fds, 0, out int count, out int flags));
                Assert.Equal("hello"u8.ToArray(), buffer[..5]);
                Assert.Equal(0, flags & Libc.MSG_CTRUNC);
                Assert.Equal(2, count);
                Assert.Equal(Target(first), Target(fds[0]));
                Assert.Equal(Target(second), Target(fds[1]));
                // Received close-on-exec (MSG_CMSG_CLOEXEC), as new descriptors of this process.
                Assert.Equal(Libc.FD_CLOEXEC, Libc.fcntl(fds[0], Libc.F_GETFD, 0) & Libc.FD_CLOEXEC);
                Assert.NotEqual(first, fds[0]);
                Libc.close(fds[0]);
                Libc.close(fds[1]);
            }
            finally
            {
                Libc.close(first);
                Libc.close(second);
            }
        }
    }

    /// <summary>
    /// Room for 2: the kernel installs 2 of the 4 and closes the others. Room for 3: the control buffer (CMSG_SPACE of
    /// 3 ints, rounded up to 8 bytes) holds all 4, and the one that does not fit the caller's array is closed.
    /// </summary>
    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void MoreDescriptorsThanRoom_AreReportedAsTruncated_AndNoneIsLeftOpen(int room)
    {
        var (a, b) = Pair();
        using (a) using (b)
        {
            var tag = "hv-scm-" + Guid.NewGuid().ToString("N")[..8];
            int[] sent = [Memfd(tag + "-0"), Memfd(tag + "-1"), Memfd(tag + "-2"), Memfd(tag + "-3")];
            Assert.Equal(1, Libc.SendWithFds(a, "x"u8, sent, Libc.MSG_NOSIGNAL));
            foreach (int fd in sent) Libc.close(fd);
            Span<int> fds = stackalloc int[room];
            Assert.Equal(1, Libc.ReceiveWithFds(b, new byte[1], fds, 0, out int count, out int flags));
            Assert.Equal(Libc.MSG_CTRUNC, flags & Libc.MSG_CTRUNC);
            Assert.Equal(Math.Min(room, 4), count);
            for (int i = 0; i < count; i++) Libc.close(fds[i]);
            Assert.DoesNotContain(Directory.EnumerateFileSystemEntries("/proc/self/fd"), e => new FileInfo(e).LinkTarget?.Contains(tag) == true);
        }
    }

    [Fact]
    public void FileType_IsThatOfThePathItself()
    {
        var dir = Directory.CreateTempSubdirectory("hv-type-").FullName;
        try
        {
            var path = Path.Combine(dir, "s.sock");
            using var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            s.Bind(new UnixDomainSocketEndPoint(path));
            File.CreateSymbolicLink(Path.Combine(dir, "link"), path);

            Assert.Equal(0, Libc.FileType(path, out uint type, out ulong inode));
            Assert.Equal(Libc.S_IFSOCK, type);
            Assert.Equal(0, Libc.FileType(Path.Combine(dir, "link"), out type, out ulong linkInode));
            Assert.Equal(Libc.S_IFLNK, type);
            Assert.NotEqual(inode, linkInode);
            Assert.Equal(0, Libc.FileType(dir, out type, out _));
            Assert.Equal(Libc.S_IFDIR, type);
            // A rename keeps the inode: the number is the file's, not the name's.
            File.Move(path, Path.Combine(dir, "moved.sock"));
            Assert.Equal(0, Libc.FileType(Path.Combine(dir, "moved.sock"), out _, out ulong moved));
            Assert.Equal(inode, moved);
            Assert.Equal(Libc.ENOENT, Libc.FileType(Path.Combine(dir, "missing"), out _, out _));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    private static (SafeFd A, SafeFd B) Pair()
    {
        Span<int> sv = stackalloc int[2];
        Assert.Equal(0, Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_STREAM | Libc.SOCK_CLOEXEC, 0, sv));
        return (new SafeFd(sv[0]), new SafeFd(sv[1]));
    }

    private static int Memfd(string name)
    {
        int fd = Libc.memfd_create(name, Libc.MFD_CLOEXEC);
        Assert.True(fd >= 0, $"memfd_create: {Libc.Describe(Libc.LastErrno)}");
        return fd;
    }

    /// <summary>What /proc says the descriptor refers to: "/memfd:NAME (deleted)" for a memfd.</summary>
    private static string? Target(int fd) => new FileInfo($"/proc/self/fd/{fd}").LinkTarget;
}
