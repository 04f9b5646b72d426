using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>File data: positioned reads and writes, syncing, allocation, copying.</summary>
internal static partial class Libc
{
    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint pread(SafeHandle fd, Span<byte> buf, nuint count, long offset);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint pwrite(SafeHandle fd, ReadOnlySpan<byte> buf, nuint count, long offset);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fsync(SafeHandle fd);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fdatasync(SafeHandle fd);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int syncfs(SafeHandle fd);

    /// <summary><c>sync(2)</c>: cannot fail.</summary>
    [LibraryImport(Name)]
    internal static partial void sync();

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fallocate(SafeHandle fd, int mode, long offset, long len);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint copy_file_range(SafeHandle fdIn, ref long offIn, SafeHandle fdOut, ref long offOut, nuint len, uint flags);
}
