using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>The CPU affinity of threads (the ring's two ends can be placed on chosen CPUs).</summary>
internal static partial class Libc
{
    /// <summary>Bytes of the CPU masks passed to the kernel: 1024 CPUs, glibc's CPU_SETSIZE (sizeof(cpu_set_t)).</summary>
    internal const int CpuMaskBytes = 128;

    /// <summary><c>sched_setaffinity(2)</c>; pid 0 is the calling thread.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int sched_setaffinity(int pid, nuint cpusetsize, ReadOnlySpan<byte> mask);

    /// <summary><c>sched_getaffinity(2)</c> through glibc, which returns 0 and zeroes the mask beyond the kernel's; pid 0 is the calling thread.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int sched_getaffinity(int pid, nuint cpusetsize, Span<byte> mask);
}
