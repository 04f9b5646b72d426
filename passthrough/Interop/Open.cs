using System.Runtime.InteropServices;

namespace Hypervisor.Passthrough.Interop;

internal static partial class Libc
{
    /// <summary><c>openat(2)</c>; <paramref name="path"/> must be NUL-terminated.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int openat(SafeFd dirfd, ReadOnlySpan<byte> path, int flags, uint mode);

    /// <summary><c>openat(2)</c> with a raw directory fd (AT_FDCWD for the /proc/self/fd reopen trick).</summary>
    [LibraryImport(Name, EntryPoint = "openat", SetLastError = true)]
    internal static partial int openat(int dirfd, ReadOnlySpan<byte> path, int flags, uint mode);

    /// <summary><c>dup(2)</c>.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int dup(SafeFd fd);

    /// <summary><c>name_to_handle_at(2)</c>; <paramref name="handle"/> is a <c>struct file_handle</c> with room after it.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int name_to_handle_at(SafeFd dirfd, ReadOnlySpan<byte> path, Span<byte> handle, out int mountId, int flags);

    /// <summary><c>name_to_handle_at(2)</c> on a raw descriptor.</summary>
    [LibraryImport(Name, EntryPoint = "name_to_handle_at", SetLastError = true)]
    internal static partial int name_to_handle_at(int dirfd, ReadOnlySpan<byte> path, Span<byte> handle, out int mountId, int flags);

    /// <summary><c>open_by_handle_at(2)</c>: needs CAP_DAC_READ_SEARCH; <paramref name="mountFd"/> must not be O_PATH.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int open_by_handle_at(SafeFd mountFd, ReadOnlySpan<byte> handle, int flags);

    /// <summary><c>readlinkat(2)</c>.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint readlinkat(SafeFd dirfd, ReadOnlySpan<byte> path, Span<byte> buf, nuint size);

    /// <summary><c>readlinkat(2)</c> with a raw directory fd.</summary>
    [LibraryImport(Name, EntryPoint = "readlinkat", SetLastError = true)]
    internal static partial nint readlinkat(int dirfd, ReadOnlySpan<byte> path, Span<byte> buf, nuint size);
}
