using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary><c>struct rlimit</c> (two <c>rlim_t</c>, 64-bit on x86_64 and arm64).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct RLimit
{
    public ulong Current;
    public ulong Maximum;
}
