using System.Runtime.InteropServices;

namespace Hypervisor.Vdev.Interop;

/// <summary>eventfd(2): kick, call and stop notifications.</summary>
internal static unsafe partial class Libc
{
    public const int EFD_CLOEXEC = 0x80000;
    public const int EFD_NONBLOCK = 0x800;

    [LibraryImport("libc", EntryPoint = "eventfd", SetLastError = true)]
    private static partial int eventfd_raw(uint initval, int flags);

    public static FileDescriptor EventFd(int flags)
    {
        int fd = eventfd_raw(0, flags | EFD_CLOEXEC);
        if (fd < 0) throw SyscallException.Last("eventfd");
        return new FileDescriptor(fd);
    }

    /// <summary>Adds 1 to an eventfd counter. Errors are returned, not thrown: a call fd the VMM closed must not kill a queue.</summary>
    public static int EventFdSignal(SafeHandle fd)
    {
        ulong one = 1;
        // Safe: `one` is a local that outlives the call; write reads exactly 8 bytes from it.
        while (write(fd, &one, 8) < 0)
        {
            int e = Marshal.GetLastPInvokeError();
            if (e == EINTR) continue;
            return e;
        }
        return 0;
    }

    /// <summary>Reads and resets an eventfd counter; returns 0 or errno (EAGAIN when non-blocking and zero).</summary>
    public static int EventFdDrain(SafeHandle fd)
    {
        ulong value;
        // Safe: `value` is a local of exactly the 8 bytes read writes.
        while (read(fd, &value, 8) < 0)
        {
            int e = Marshal.GetLastPInvokeError();
            if (e == EINTR) continue;
            return e;
        }
        return 0;
    }
}
