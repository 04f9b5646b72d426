using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>Changing an inode's attributes: mode, owner, timestamps.</summary>
internal static partial class Libc
{
    internal const long UTIME_NOW = (1L << 30) - 1;
    internal const long UTIME_OMIT = (1L << 30) - 2;

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fchmod(SafeHandle fd, uint mode);

    /// <summary><c>fchmodat(2)</c>; <paramref name="path"/> must be NUL-terminated.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fchmodat(int dirfd, ReadOnlySpan<byte> path, uint mode, int flags);

    /// <summary><c>fchownat(2)</c>; <paramref name="path"/> must be NUL-terminated.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fchownat(SafeHandle dirfd, ReadOnlySpan<byte> path, uint owner, uint group, int flags);

    /// <summary><c>utimensat(2)</c>; <paramref name="times"/> holds two timespecs (atime, mtime).</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int utimensat(SafeHandle dirfd, ReadOnlySpan<byte> path, ReadOnlySpan<Timespec> times, int flags);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int futimens(SafeHandle fd, ReadOnlySpan<Timespec> times);
}
