using System.Runtime.InteropServices;

namespace Hypervisor.Launcher.Tests.Interop;

/// <summary>The syscalls the launcher tests use to prepare inherited descriptors and inspect the daemon.</summary>
internal static partial class TestLibc
{
    [LibraryImport("libc", EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MemfdCreate(string name, uint flags);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "getsid", SetLastError = true)]
    public static partial int GetSid(int pid);

    [LibraryImport("libc", EntryPoint = "getpgid", SetLastError = true)]
    public static partial int GetPgid(int pid);

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);

    [LibraryImport("libc", EntryPoint = "geteuid")]
    public static partial uint GetEuid();

    [LibraryImport("libc", EntryPoint = "umount2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Umount2(string target, int flags);

    public const int SIGKILL = 9;
    public const int SIGTERM = 15;
    public const int MNT_DETACH = 2;

    /// <summary>
    /// A memfd without FD_CLOEXEC, so every process this test host starts inherits it: the way the vdev hands
    /// ring descriptors to fuse_launcher. Its /proc link names it, which identifies it in another process.
    /// </summary>
    public static int InheritableMemfd(string name)
    {
        int fd = MemfdCreate(name, 0);
        if (fd < 0) throw new IOException($"memfd_create failed: errno {Marshal.GetLastPInvokeError()}");
        return fd;
    }
}
