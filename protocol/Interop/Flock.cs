using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary><c>struct flock</c> of LP64 Linux (32 bytes), the argument of fcntl F_OFD_GETLK / F_OFD_SETLK(W).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct Flock
{
    public short Type;
    public short Whence;
    public long Start;
    public long Len;
    public int Pid;
}
