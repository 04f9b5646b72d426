using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary><c>struct timespec</c> (LP64).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct Timespec
{
    public long Sec;
    public long Nsec;
}
