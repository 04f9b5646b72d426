using System.Runtime.InteropServices;

namespace Hypervisor.Protocol.Interop;

internal static partial class ShmInterop
{
    /// <summary>Bytes of the CPU masks passed to the kernel: 1024 CPUs, glibc's CPU_SETSIZE.</summary>
    internal const int CpuMaskBytes = 128;

    /// <summary>sched_setaffinity(2); pid 0 is the calling thread.</summary>
    [LibraryImport("libc", EntryPoint = "sched_setaffinity", SetLastError = true)]
    internal static unsafe partial int SchedSetAffinity(int pid, nuint size, byte* mask);

    /// <summary>sched_getaffinity(2) through glibc, which returns 0 and zeroes the mask beyond the kernel's; pid 0 is the calling thread.</summary>
    [LibraryImport("libc", EntryPoint = "sched_getaffinity", SetLastError = true)]
    internal static unsafe partial int SchedGetAffinity(int pid, nuint size, byte* mask);
}
