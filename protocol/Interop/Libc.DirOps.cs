using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>Creating, linking, renaming, removing and listing directory entries; every path must be NUL-terminated.</summary>
internal static partial class Libc
{
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int mkdirat(SafeHandle dirfd, ReadOnlySpan<byte> path, uint mode);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int mknodat(SafeHandle dirfd, ReadOnlySpan<byte> path, uint mode, ulong dev);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int symlinkat(ReadOnlySpan<byte> target, SafeHandle dirfd, ReadOnlySpan<byte> path);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int unlinkat(SafeHandle dirfd, ReadOnlySpan<byte> path, int flags);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int renameat2(SafeHandle olddirfd, ReadOnlySpan<byte> oldpath, SafeHandle newdirfd, ReadOnlySpan<byte> newpath, uint flags);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int linkat(int olddirfd, ReadOnlySpan<byte> oldpath, SafeHandle newdirfd, ReadOnlySpan<byte> newpath, int flags);

    /// <summary><c>getdents64(2)</c> (glibc 2.30+): <c>struct linux_dirent64</c> records.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint getdents64(SafeHandle fd, Span<byte> buf, nuint count);
}
