using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>
/// The calling thread's supplementary groups, through the raw syscalls: the kernel keeps credentials per thread, and
/// glibc's setgroups(3) would change every thread of the process (it broadcasts the change, as for setuid).
/// </summary>
internal static partial class Libc
{
    [LibraryImport(Name, EntryPoint = "syscall", SetLastError = true)]
    private static unsafe partial long syscallGroups(long number, nint size, uint* list);

    private static long SYS_getgroups => RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? 158 : 115;

    private static long SYS_setgroups => RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? 159 : 116;

    /// <summary>
    /// getgroups(2) of this thread into <paramref name="groups"/>: the count, or -1 (EINVAL when they do not fit).
    /// </summary>
    internal static unsafe int GetThreadGroups(Span<uint> groups)
    {
        // The span is pinned for the call and the kernel writes at most groups.Length entries.
        fixed (uint* list = groups) return (int)syscallGroups(SYS_getgroups, groups.Length, list);
    }

    /// <summary>setgroups(2) of this thread only (needs CAP_SETGID): 0, or -1 with errno.</summary>
    internal static unsafe int SetThreadGroups(ReadOnlySpan<uint> groups)
    {
        // The span is pinned for the call and the kernel reads exactly groups.Length entries.
        fixed (uint* list = groups) return (int)syscallGroups(SYS_setgroups, groups.Length, list);
    }
}
