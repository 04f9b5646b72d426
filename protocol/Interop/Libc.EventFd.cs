using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>eventfd(2): doorbells, kick/call notifications and stop signals.</summary>
internal static partial class Libc
{
    internal const int EFD_CLOEXEC = 0x80000;
    internal const int EFD_NONBLOCK = 0x800;

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int eventfd(uint initval, int flags);

    /// <summary>A new close-on-exec eventfd with a zero counter and <paramref name="flags"/> (EFD_NONBLOCK).</summary>
    /// <exception cref="SyscallException">eventfd failed (out of descriptors).</exception>
    internal static SafeFd EventFd(int flags)
    {
        int fd = eventfd(0, flags | EFD_CLOEXEC);
        if (fd < 0) throw SyscallException.Last("eventfd");
        return new SafeFd(fd);
    }

    /// <summary>
    /// Adds 1 to an eventfd counter; returns 0 or the errno. EAGAIN (the counter is at its maximum) still leaves the
    /// eventfd readable, which is all a signal is for. Errors are returned, not thrown: a call fd the VMM closed must not
    /// kill a queue.
    /// </summary>
    internal static int EventFdSignal(int fd)
    {
        ulong one = 1;
        while (write(fd, MemoryMarshal.AsBytes(new ReadOnlySpan<ulong>(ref one)), sizeof(ulong)) < 0)
        {
            int e = LastErrno;
            if (e != EINTR) return e;
        }
        return 0;
    }

    /// <inheritdoc cref="EventFdSignal(int)"/>
    internal static int EventFdSignal(SafeHandle fd) => OnReferenced(fd, EventFdSignal);

    /// <summary>Reads and so resets an eventfd counter; returns 0, or the errno (EAGAIN: non-blocking and it was zero).</summary>
    internal static int EventFdDrain(int fd)
    {
        ulong value = 0;
        while (read(fd, MemoryMarshal.AsBytes(new Span<ulong>(ref value)), sizeof(ulong)) < 0)
        {
            int e = LastErrno;
            if (e != EINTR) return e;
        }
        return 0;
    }

    /// <inheritdoc cref="EventFdDrain(int)"/>
    internal static int EventFdDrain(SafeHandle fd) => OnReferenced(fd, EventFdDrain);

    /// <summary>Runs <paramref name="call"/> on the descriptor while the handle is referenced, so it cannot be closed and reused meanwhile.</summary>
    private static int OnReferenced(SafeHandle fd, Func<int, int> call)
    {
        bool referenced = false;
        try
        {
            fd.DangerousAddRef(ref referenced);
            return call((int)fd.DangerousGetHandle());
        }
        finally
        {
            if (referenced) fd.DangerousRelease();
        }
    }
}
