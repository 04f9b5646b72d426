using System.Runtime.InteropServices;

namespace Hypervisor.Passthrough.Interop;

internal static partial class Libc
{
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int mkdirat(SafeFd dirfd, ReadOnlySpan<byte> path, uint mode);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int mknodat(SafeFd dirfd, ReadOnlySpan<byte> path, uint mode, ulong dev);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int symlinkat(ReadOnlySpan<byte> target, SafeFd dirfd, ReadOnlySpan<byte> path);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int unlinkat(SafeFd dirfd, ReadOnlySpan<byte> path, int flags);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int renameat2(SafeFd olddirfd, ReadOnlySpan<byte> oldpath, SafeFd newdirfd, ReadOnlySpan<byte> newpath, uint flags);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int linkat(int olddirfd, ReadOnlySpan<byte> oldpath, SafeFd newdirfd, ReadOnlySpan<byte> newpath, int flags);

    /// <summary><c>getdents64(2)</c> (glibc 2.30+): <c>struct linux_dirent64</c> records.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint getdents64(SafeFd fd, Span<byte> buf, nuint count);
}
