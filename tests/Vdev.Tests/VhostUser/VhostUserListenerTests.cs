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
}
