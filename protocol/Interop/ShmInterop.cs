using System.Runtime.InteropServices;

namespace Hypervisor.Protocol.Interop;

/// <summary>
/// The Linux system calls behind the shared-memory ring: memfd, mmap, eventfd, poll, pidfd, fcntl, and the CPU
/// affinity of the threads at its two ends.
/// Each group lives in its own file; this part holds the shared pieces (close, errno helpers).
/// </summary>
internal static partial class ShmInterop
{
    internal const int EINTR = 4;
    internal const int EAGAIN = 11;
    internal const int ESRCH = 3;

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    internal static partial int Close(int fd);

    /// <summary>Builds an IOException that names the failing call and the errno it returned.</summary>
    internal static IOException Failure(string call, int errno)
        => new($"{call} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}).");
}
