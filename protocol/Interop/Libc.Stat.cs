using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>fstat(2) and fstatat(2) into <see cref="Stat"/>, and fstatvfs(3) into <see cref="StatVfs"/>.</summary>
internal static partial class Libc
{
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fstat(SafeHandle fd, out Stat st);

    /// <summary><c>fstat(2)</c> of a descriptor its caller keeps open.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fstat(int fd, out Stat st);

    /// <summary><c>fstatat(2)</c>; <paramref name="path"/> must be NUL-terminated.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fstatat(SafeHandle dirfd, ReadOnlySpan<byte> path, out Stat st, int flags);

    /// <summary><c>fstatat(2)</c> with a raw directory fd (AT_FDCWD: a path relative to the working directory, or absolute).</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fstatat(int dirfd, ReadOnlySpan<byte> path, out Stat st, int flags);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fstatvfs(SafeHandle fd, out StatVfs st);
}
