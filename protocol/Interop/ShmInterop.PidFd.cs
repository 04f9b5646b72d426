using System.Runtime.InteropServices;

namespace Hypervisor.Protocol.Interop;

internal static partial class ShmInterop
{
    /// <summary>__NR_pidfd_open on x86_64 and aarch64 (the number is shared by the generic table).</summary>
    private const long SYS_pidfd_open = 434;

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall2(long number, long arg1, long arg2);

    /// <summary>pidfd_open(2): a descriptor that polls readable once the process has exited (Linux 5.3+).</summary>
    internal static int PidFdOpen(int pid) => (int)Syscall2(SYS_pidfd_open, pid, 0);

    /// <summary>__NR_pidfd_getfd on x86_64 and aarch64.</summary>
    private const long SYS_pidfd_getfd = 438;

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall3(long number, long arg1, long arg2, long arg3);

    /// <summary>pidfd_getfd(2): a duplicate (close-on-exec) of another process's descriptor; needs ptrace rights over it (Linux 5.6+).</summary>
    internal static int PidFdGetFd(int pidfd, int targetFd) => (int)Syscall3(SYS_pidfd_getfd, pidfd, targetFd, 0);
}
