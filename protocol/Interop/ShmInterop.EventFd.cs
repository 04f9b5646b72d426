using System.Runtime.InteropServices;

namespace Hypervisor.Protocol.Interop;

internal static partial class ShmInterop
{
    internal const int EFD_CLOEXEC = 0x80000;
    internal const int EFD_NONBLOCK = 0x800;

    [LibraryImport("libc", EntryPoint = "eventfd", SetLastError = true)]
    internal static partial int EventFd(uint initval, int flags);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    internal static unsafe partial nint Read(int fd, void* buf, nuint count);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    internal static unsafe partial nint Write(int fd, void* buf, nuint count);

    /// <summary>Adds one to an eventfd counter. EAGAIN (counter saturated) still leaves it readable, so it is not an error.</summary>
    internal static unsafe void EventFdSignal(int fd)
    {
        ulong one = 1;
        // Safe: the buffer is a local of exactly the 8 bytes eventfd expects.
        while (Write(fd, &one, 8) < 0 && Marshal.GetLastPInvokeError() == EINTR) { }
    }

    /// <summary>Resets a non-blocking eventfd counter to zero; returns whether it was non-zero.</summary>
    internal static unsafe bool EventFdDrain(int fd)
    {
        ulong value;
        nint n;
        // Safe: the buffer is a local of exactly the 8 bytes eventfd returns.
        while ((n = Read(fd, &value, 8)) < 0 && Marshal.GetLastPInvokeError() == EINTR) { }
        return n == 8;
    }
}
