using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary><c>struct statvfs</c> of LP64 Linux glibc (112 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct StatVfs
{
    public ulong Bsize;
    public ulong Frsize;
    public ulong Blocks;
    public ulong Bfree;
    public ulong Bavail;
    public ulong Files;
    public ulong Ffree;
    public ulong Favail;
    public ulong Fsid;
    public ulong Flag;
    public ulong Namemax;
    // unsafe only for the fixed-size reserve at the end, which is never read.
    public fixed int Spare[6];
}
