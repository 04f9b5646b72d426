using System.Runtime.InteropServices;

namespace Hypervisor.Passthrough.Interop;

internal static partial class Libc
{
    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint pread(SafeFd fd, Span<byte> buf, nuint count, long offset);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint pwrite(SafeFd fd, ReadOnlySpan<byte> buf, nuint count, long offset);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fsync(SafeFd fd);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fdatasync(SafeFd fd);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int syncfs(SafeFd fd);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial long lseek(SafeFd fd, long offset, int whence);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fallocate(SafeFd fd, int mode, long offset, long len);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint copy_file_range(SafeFd fdIn, ref long offIn, SafeFd fdOut, ref long offOut, nuint len, uint flags);
}
