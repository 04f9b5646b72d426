using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

internal static partial class Libc
{
    internal const int PROT_READ = 0x1;
    internal const int PROT_WRITE = 0x2;
    internal const int MAP_SHARED = 0x01;
    internal static readonly nint MAP_FAILED = -1;

    /// <summary><c>mmap(2)</c> of a descriptor; the mapping outlives the descriptor.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint mmap(nint addr, nuint length, int prot, int flags, SafeHandle fd, long offset);

    /// <summary><c>mmap(2)</c> of a descriptor its caller keeps open.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int munmap(nint addr, nuint length);
}
