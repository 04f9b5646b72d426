using System.Runtime.InteropServices;

namespace Hypervisor.Launcher.Interop;

internal static partial class Libc
{
    public const short POLLIN = 0x001;
    public const short POLLERR = 0x008;
    public const short POLLHUP = 0x010;
    public const short POLLNVAL = 0x020;

    /// <summary>struct pollfd.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short REvents;
    }

    [LibraryImport(Lib, EntryPoint = "poll", SetLastError = true)]
    private static unsafe partial int Poll(PollFd* fds, nuint count, int timeoutMs);

    /// <summary>poll(2) over <paramref name="fds"/>; entries with a negative fd are ignored by the kernel.</summary>
    public static int Poll(Span<PollFd> fds, int timeoutMs)
    {
        unsafe
        {
            // Safe: the span is pinned for the call and its length is passed as the count.
            fixed (PollFd* p = fds)
            {
                return Poll(p, (nuint)fds.Length, timeoutMs);
            }
        }
    }
}
