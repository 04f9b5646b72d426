using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary><c>struct pollfd</c> (poll.h). An entry whose <see cref="Fd"/> is negative is ignored by poll(2).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct PollFd
{
    public int Fd;
    public short Events;
    public short Revents;
}
