using System.Runtime.InteropServices;
using Hypervisor.Interop;

namespace Hypervisor.Vdev.Tests.Frontend;

/// <summary>The front-end's eventfds and waits, on the calls of the interop source set.</summary>
internal static class FrontendFds
{
    public static IOException Error(string call) => new($"{call} failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");

    /// <summary>Waits up to <paramref name="timeoutMs"/> for <paramref name="fd"/> to be readable.</summary>
    public static bool WaitReadable(int fd, int timeoutMs)
    {
        PollFd p = new() { Fd = fd, Events = Libc.POLLIN };
        while (true)
        {
            int r = Libc.poll(new Span<PollFd>(ref p), 1, timeoutMs);
            if (r > 0) return true;
            if (r == 0) return false;
            if (Marshal.GetLastPInvokeError() != Libc.EINTR) throw Error("poll");
        }
    }

    public static int NewEventFd(bool nonBlocking = true)
    {
        int fd = Libc.eventfd(0, Libc.EFD_CLOEXEC | (nonBlocking ? Libc.EFD_NONBLOCK : 0));
        if (fd < 0) throw Error("eventfd");
        return fd;
    }

    /// <summary>Reads and resets an eventfd; 0 when it was not signalled (non-blocking).</summary>
    public static ulong ReadEventFd(int fd)
    {
        ulong v = 0;
        return Libc.read(fd, MemoryMarshal.AsBytes(new Span<ulong>(ref v)), sizeof(ulong)) == sizeof(ulong) ? v : 0;
    }

    public static void SignalEventFd(int fd)
    {
        ulong one = 1;
        if (Libc.write(fd, MemoryMarshal.AsBytes(new ReadOnlySpan<ulong>(ref one)), sizeof(ulong)) != sizeof(ulong)) throw Error("eventfd write");
    }
}
