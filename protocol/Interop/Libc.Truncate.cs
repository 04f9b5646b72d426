using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

internal static partial class Libc
{
    /// <summary><c>truncate(2)</c>; <paramref name="path"/> must be NUL-terminated.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int truncate(ReadOnlySpan<byte> path, long length);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int ftruncate(SafeHandle fd, long length);

    /// <summary><c>ftruncate(2)</c> of a descriptor its caller keeps open.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int ftruncate(int fd, long length);
}
