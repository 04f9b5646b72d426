using System.Runtime.InteropServices;

namespace Hypervisor.Vdev.Interop;

/// <summary>mmap(2)/munmap(2) of guest memory regions.</summary>
internal static unsafe partial class Libc
{
    public const int PROT_READ = 1;
    public const int PROT_WRITE = 2;
    public const int MAP_SHARED = 1;
    public static readonly nint MAP_FAILED = -1;

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint mmap(nint addr, nuint length, int prot, int flags, SafeHandle fd, long offset);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int munmap(nint addr, nuint length);
}
