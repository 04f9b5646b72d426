using System.Runtime.InteropServices;

namespace Hypervisor.Vdev.Interop;

/// <summary>poll(2): every blocking wait in the vdev also watches a stop eventfd so cancellation is immediate.</summary>
internal static unsafe partial class Libc
{
    public const short POLLIN = 0x1;
    public const short POLLERR = 0x8;
    public const short POLLHUP = 0x10;
    public const short POLLNVAL = 0x20;

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [LibraryImport("libc", SetLastError = true)]
    public static partial int poll(PollFd* fds, nuint nfds, int timeout);

    /// <summary>
    /// Waits until <paramref name="fd"/> or <paramref name="stop"/> is readable (or hung up).
    /// Returns true when <paramref name="fd"/> is ready, false when <paramref name="stop"/> fired (it wins when both are ready).
    /// </summary>
    public static bool WaitReadable(SafeHandle fd, SafeHandle stop) => (WaitAny(fd, stop, -1, -1) & 2) == 0;

    /// <summary>
    /// Waits until <paramref name="fd"/>, <paramref name="stop"/>, or one of the raw descriptors
    /// <paramref name="extraA"/> and <paramref name="extraB"/> (negative: none; owned by the caller, kept open
    /// across the call) is readable or hung up. Returns which: bit 0 <paramref name="fd"/>, bit 1
    /// <paramref name="stop"/>, bit 2 <paramref name="extraA"/>, bit 3 <paramref name="extraB"/>.
    /// </summary>
    public static int WaitAny(SafeHandle fd, SafeHandle stop, int extraA, int extraB)
    {
        bool a = false, b = false;
        fd.DangerousAddRef(ref a);
        stop.DangerousAddRef(ref b);
        try
        {
            var fds = stackalloc PollFd[4];
            fds[0] = new PollFd { Fd = (int)fd.DangerousGetHandle(), Events = POLLIN };
            fds[1] = new PollFd { Fd = (int)stop.DangerousGetHandle(), Events = POLLIN };
            // poll(2) ignores entries whose fd is negative.
            fds[2] = new PollFd { Fd = extraA, Events = POLLIN };
            fds[3] = new PollFd { Fd = extraB, Events = POLLIN };
            while (true)
            {
                // Safe: `fds` is a 4-element stack array; the handles are kept open by the AddRefs above.
                int r = poll(fds, 4, -1);
                if (r < 0)
                {
                    int e = Marshal.GetLastPInvokeError();
                    if (e == EINTR) continue;
                    throw new SyscallException("poll", e);
                }
                int ready = 0;
                for (int i = 0; i < 4; i++)
                    if (fds[i].Revents != 0) ready |= 1 << i;
                if (ready != 0) return ready;
            }
        }
        finally
        {
            if (a) fd.DangerousRelease();
            if (b) stop.DangerousRelease();
        }
    }
}
