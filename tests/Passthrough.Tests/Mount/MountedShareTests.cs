using System.Diagnostics;
using System.Runtime.InteropServices;
using Hypervisor.Interop;
using Hypervisor.Passthrough.Tests.FileSystem;

namespace Hypervisor.Passthrough.Tests.Mount;

/// <summary>The daemon's mount lifecycle and the options that change what the mount offers.</summary>
[Trait("Category", "Root")]
public sealed class MountedShareTests
{
    [Fact]
    public void DisposeUnmountsStopsTheDaemonAndRemovesTheDirectories()
    {
        var share = MountedShare.Start();
        var pid = share.Pid;
        File.WriteAllText(Path.Combine(share.MountPoint, "f"), "x");
        Assert.Equal("x", File.ReadAllText(Path.Combine(share.Source, "f")));
        share.Dispose();
        Assert.Null(MountedShare.MountFsType(share.MountPoint));
        Assert.False(Directory.Exists(share.Root));
        Assert.False(ProcessExists(pid));
    }

    [Fact]
    public void DaemonExitsZeroWhenUnmounted()
    {
        using var share = MountedShare.Start();
        share.Unmount();
        Assert.Equal(0, share.WaitForExit(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public void DisposeCleansUpAfterTheDaemonWasKilled()
    {
        var share = MountedShare.Start();
        Process.GetProcessById(share.Pid).Kill();
        share.WaitForExit(TimeSpan.FromSeconds(10));
        // A mount whose daemon died answers ENOTCONN; the fixture must still detach it and remove everything.
        Assert.ThrowsAny<IOException>(() => File.ReadAllText(Path.Combine(share.MountPoint, "anything")));
        share.Dispose();
        Assert.Null(MountedShare.MountFsType(share.MountPoint));
        Assert.False(Directory.Exists(share.Root));
    }

    [Fact]
    public void SigtermUnmountsAndExits()
    {
        using var share = MountedShare.Start();
        Assert.Equal(0, Libc.kill(share.Pid, Libc.SIGTERM));
        Assert.Equal(0, share.WaitForExit(TimeSpan.FromSeconds(10)));
        Assert.Null(MountedShare.MountFsType(share.MountPoint));
    }

    /// <summary>
    /// Without --xattr the daemon answers the xattr opcodes with ENOSYS, as virtiofsd does without its xattr option;
    /// the kernel then remembers and reports EOPNOTSUPP for every later call, while the same calls work on the host.
    /// </summary>
    [Fact]
    public void XattrsAreNotSupportedWithoutTheOption()
    {
        using var share = MountedShare.Start();
        var onMount = Path.Combine(share.MountPoint, "f");
        var onHost = Path.Combine(share.Source, "f");
        File.WriteAllText(onMount, "x");
        var value = "v"u8.ToArray();
        var buffer = new byte[256];
        Assert.Equal(0, Host.setxattr(onHost, "user.host", value, 0));
        for (var round = 0; round < 2; round++)
        {
            Assert.Equal(-1, Host.setxattr(onMount, "user.a", value, 0));
            Assert.Equal(Libc.EOPNOTSUPP, Marshal.GetLastPInvokeError());
            Assert.Equal(-1, Host.getxattr(onMount, "user.host", buffer));
            Assert.Equal(Libc.EOPNOTSUPP, Marshal.GetLastPInvokeError());
            Assert.Equal(-1, Host.listxattr(onMount, buffer));
            Assert.Equal(Libc.EOPNOTSUPP, Marshal.GetLastPInvokeError());
            Assert.Equal(-1, Host.removexattr(onMount, "user.host"));
            Assert.Equal(Libc.EOPNOTSUPP, Marshal.GetLastPInvokeError());
        }
        Assert.Equal(1, Host.getxattr(onHost, "user.host", buffer));
    }

    [Fact]
    public void ChangesOnTheHostAreVisibleThroughTheMount()
    {
        using var share = MountedShare.Start();
        File.WriteAllText(Path.Combine(share.Source, "from-host"), "host data");
        Directory.CreateDirectory(Path.Combine(share.Source, "dir"));
        Assert.Equal("host data", File.ReadAllText(Path.Combine(share.MountPoint, "from-host")));
        Assert.True(Directory.Exists(Path.Combine(share.MountPoint, "dir")));
        File.Delete(Path.Combine(share.Source, "from-host"));
        // cache=auto keeps entries for about a second; after that the removal shows.
        var deadline = Stopwatch.StartNew();
        while (File.Exists(Path.Combine(share.MountPoint, "from-host")) && deadline.Elapsed < TimeSpan.FromSeconds(5)) Thread.Sleep(100);
        Assert.False(File.Exists(Path.Combine(share.MountPoint, "from-host")));
    }

    private static bool ProcessExists(int pid) => Directory.Exists($"/proc/{pid}") && !File.ReadAllText($"/proc/{pid}/stat").Contains(") Z ");
}
