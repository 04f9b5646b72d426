using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>poll(2), and waits that also watch a stop eventfd so that cancellation is immediate.</summary>
internal static partial class Libc
{
    internal const short POLLIN = 0x001;
    internal const short POLLERR = 0x008;
    internal const short POLLHUP = 0x010;
    internal const short POLLNVAL = 0x020;

    /// <summary><c>poll(2)</c> over the first <paramref name="nfds"/> entries of <paramref name="fds"/>.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int poll(Span<PollFd> fds, nuint nfds, int timeout);

    /// <summary>
    /// Waits up to <paramref name="timeoutMs"/> for <paramref name="fd"/> to become readable (or hung up): 1 when it
    /// did, 0 on timeout, -1 with errno set on failure (EINTR included).
    /// </summary>
    internal static int PollReadable(SafeHandle fd, int timeoutMs)
    {
        bool added = false;
        // The reference keeps the descriptor open while its number sits in the pollfd.
        fd.DangerousAddRef(ref added);
        try
        {
            Span<PollFd> fds = stackalloc PollFd[1];
            fds[0] = new PollFd { Fd = (int)fd.DangerousGetHandle(), Events = POLLIN };
            return poll(fds, 1, timeoutMs);
        }
        finally
        {
            if (added) fd.DangerousRelease();
        }
    }

    /// <summary>
    /// Waits until <paramref name="fd"/> or <paramref name="stop"/> is readable (or hung up).
    /// Returns true when <paramref name="fd"/> is ready, false when <paramref name="stop"/> fired (it wins when both are ready).
    /// </summary>
    internal static bool WaitReadable(SafeHandle fd, SafeHandle stop) => (WaitAny(fd, stop, -1, -1) & 2) == 0;

    /// <summary>
    /// Waits until <paramref name="fd"/>, <paramref name="stop"/>, or one of the raw descriptors
    /// <paramref name="extraA"/> and <paramref name="extraB"/> (negative: none; owned by the caller, kept open
    /// across the call) is readable or hung up. Returns which: bit 0 <paramref name="fd"/>, bit 1
    /// <paramref name="stop"/>, bit 2 <paramref name="extraA"/>, bit 3 <paramref name="extraB"/>.
    /// </summary>
    /// <exception cref="SyscallException">poll failed other than with EINTR.</exception>
    internal static int WaitAny(SafeHandle fd, SafeHandle stop, int extraA, int extraB)
    {
        bool a = false, b = false;
        // The references keep both descriptors open while their numbers sit in the pollfd array.
        fd.DangerousAddRef(ref a);
        stop.DangerousAddRef(ref b);
        try
        {
            Span<PollFd> fds = stackalloc PollFd[4];
            fds[0] = new PollFd { Fd = (int)fd.DangerousGetHandle(), Events = POLLIN };
            fds[1] = new PollFd { Fd = (int)stop.DangerousGetHandle(), Events = POLLIN };
            fds[2] = new PollFd { Fd = extraA, Events = POLLIN };
            fds[3] = new PollFd { Fd = extraB, Events = POLLIN };
            while (true)
            {
                int r = poll(fds, 4, -1);
                if (r < 0)
                {
                    int e = LastErrno;
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
