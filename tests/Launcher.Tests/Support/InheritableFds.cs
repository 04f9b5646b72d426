using Hypervisor.Interop;

namespace Hypervisor.Launcher.Tests.Support;

/// <summary>Descriptors the launcher tests hand to fuse_launcher the way the vdev does: by inheritance.</summary>
internal static class InheritableFds
{
    /// <summary>
    /// A memfd without FD_CLOEXEC, so every process this test host starts inherits it: the way the vdev hands
    /// ring descriptors to fuse_launcher. Its /proc link names it, which identifies it in another process.
    /// </summary>
    public static int Memfd(string name)
    {
        int fd = Libc.memfd_create(name, 0);
        if (fd < 0) throw SyscallException.Last("memfd_create");
        return fd;
    }
}
