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
}
