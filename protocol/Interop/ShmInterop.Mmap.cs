using System.Runtime.InteropServices;

namespace Hypervisor.Protocol.Interop;

internal static partial class ShmInterop
{
    internal const int PROT_READ = 0x1;
    internal const int PROT_WRITE = 0x2;
    internal const int MAP_SHARED = 0x01;
    internal static readonly IntPtr MAP_FAILED = new(-1);

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    internal static partial IntPtr Mmap(IntPtr addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    internal static partial int Munmap(IntPtr addr, nuint length);
}
