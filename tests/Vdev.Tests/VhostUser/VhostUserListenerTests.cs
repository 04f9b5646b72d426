using System.Text;
using Hypervisor.Interop;
using Hypervisor.Vdev.VhostUser;

namespace Hypervisor.Vdev.Tests.VhostUser;

/// <summary>The listening socket at <c>--socket-path</c>.</summary>
public sealed class VhostUserListenerTests
{
    [Fact]
    public void APathOfTheFull107BytesOfSunPathIsBound_ALongerOneIsRefusedWithASentence()
    {
        var dir = Directory.CreateTempSubdirectory("hv-listen-").FullName;
        try
        {
            var path = dir + "/" + new string('s', 107 - dir.Length - 1);
            Assert.Equal(107, Encoding.UTF8.GetByteCount(path));
            using (VhostUserListener.Bind(path))
            {
                Assert.Equal(0, Libc.FileType(path, out uint type, out _));
                Assert.Equal(Libc.S_IFSOCK, type);
            }
            var e = Assert.Throws<ListenerException>(() => VhostUserListener.Bind(path + "s"));
            Assert.Equal($"The socket path '{path}s' is longer than the 107 bytes a UNIX socket address holds; use a shorter --socket-path.", e.Message);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void WithASocketGroup_TheSocketBelongsToTheGroup_AndTheGroupMayConnect()
    {
        // As virtiofsd's --socket-group: the group owns the socket and may write it (connect needs write permission).
        var gid = Libc.GroupId("nogroup") ?? Libc.GroupId("65534");
        Assert.NotNull(gid);
        var dir = Directory.CreateTempSubdirectory("hv-listen-").FullName;
        try
        {
            var path = Path.Combine(dir, "s.sock");
            using (VhostUserListener.Bind(path, gid))
            {
                var stat = Hypervisor.Vdev.Tests.Guest.HostProcesses.Run("/usr/bin/stat", ["-c", "%g %a", path], TimeSpan.FromSeconds(30));
                Assert.Equal($"{gid} 770", stat.Stdout.Trim());
            }
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void TheSocketFileAppearsListening_UnderItsNameOnly_AndALiveSocketThereIsNotReplaced()
    {
        var dir = Directory.CreateTempSubdirectory("hv-listen-").FullName;
        try
        {
            var path = Path.Combine(dir, "s.sock");
            using (VhostUserListener.Bind(path))
            {
                // Bound under another name, listening, then linked: the directory holds the socket's name alone, and a
                // client may connect the moment it sees the file.
                Assert.Equal(["s.sock"], Directory.GetFileSystemEntries(dir).Select(entry => Path.GetFileName(entry)!).ToArray());
                using (var client = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified))
                    client.Connect(new System.Net.Sockets.UnixDomainSocketEndPoint(path));
                Assert.Equal(0, Libc.FileType(path, out _, out ulong inode));

                // A second backend on the same path while the first listens (its probe connects once more, so no further client
                // connects: the backlog of 1 is full with two unaccepted): refused, the first keeps its socket file.
                var e = Assert.Throws<ListenerException>(() => VhostUserListener.Bind(path));
                Assert.Equal($"The socket path '{path}' is already in use (another backend, or a stale socket); stop that process or remove the file.", e.Message);
                Assert.Equal(["s.sock"], Directory.GetFileSystemEntries(dir).Select(entry => Path.GetFileName(entry)!).ToArray());
                Assert.Equal(0, Libc.FileType(path, out uint type, out ulong stillInode));
                Assert.Equal((Libc.S_IFSOCK, inode), (type, stillInode));
            }
            Assert.Empty(Directory.GetFileSystemEntries(dir));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
