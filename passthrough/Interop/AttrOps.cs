using System.Runtime.InteropServices;

namespace Hypervisor.Passthrough.Interop;

internal static partial class Libc
{
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fchmod(SafeFd fd, uint mode);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fchmodat(int dirfd, ReadOnlySpan<byte> path, uint mode, int flags);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fchownat(SafeFd dirfd, ReadOnlySpan<byte> path, uint owner, uint group, int flags);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int truncate(ReadOnlySpan<byte> path, long length);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int ftruncate(SafeFd fd, long length);

    /// <summary><c>utimensat(2)</c>; <paramref name="times"/> holds two timespecs (atime, mtime).</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int utimensat(SafeFd dirfd, ReadOnlySpan<byte> path, ReadOnlySpan<Timespec> times, int flags);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int futimens(SafeFd fd, ReadOnlySpan<Timespec> times);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int faccessat(int dirfd, ReadOnlySpan<byte> path, int mode, int flags);
}
