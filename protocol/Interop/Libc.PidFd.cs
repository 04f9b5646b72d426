using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>
/// pidfd_open(2) and pidfd_getfd(2), through syscall(2) so that they work with a C library older than the kernel
/// (glibc wraps pidfd_open only from 2.36).
/// </summary>
internal static partial class Libc
{
    /// <summary>__NR_pidfd_open on x86_64 and arm64 (the number is shared by the generic table).</summary>
    private const long SYS_pidfd_open = 434;

    /// <summary>__NR_pidfd_getfd on x86_64 and arm64.</summary>
    private const long SYS_pidfd_getfd = 438;

    [LibraryImport(Name, EntryPoint = "syscall", SetLastError = true)]
    private static partial long syscall2(long number, long arg1, long arg2);

    [LibraryImport(Name, EntryPoint = "syscall", SetLastError = true)]
    private static partial long syscall3(long number, long arg1, long arg2, long arg3);

    /// <summary><c>pidfd_open(2)</c>: a close-on-exec descriptor that polls readable once the process has exited (Linux 5.3+).</summary>
    internal static int pidfd_open(int pid, uint flags) => (int)syscall2(SYS_pidfd_open, pid, flags);

    /// <summary><c>pidfd_getfd(2)</c>: a close-on-exec duplicate of another process's descriptor; needs ptrace rights over it (Linux 5.6+).</summary>
    internal static int pidfd_getfd(int pidfd, int targetFd, uint flags) => (int)syscall3(SYS_pidfd_getfd, pidfd, targetFd, flags);
}
