using System.Runtime.InteropServices;

namespace Hypervisor.Vdev.Interop;

/// <summary>close, read, write, and errno numbers the vdev reacts to.</summary>
internal static unsafe partial class Libc
{
    public const int EINTR = 4;
    public const int EAGAIN = 11;
    public const int EIO = 5;

    [LibraryImport("libc", SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint read(SafeHandle fd, void* buf, nuint count);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint write(SafeHandle fd, void* buf, nuint count);
}
