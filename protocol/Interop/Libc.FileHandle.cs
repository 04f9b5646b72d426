using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>name_to_handle_at(2) and open_by_handle_at(2): inodes identified by file handle instead of an open descriptor.</summary>
internal static partial class Libc
{
    /// <summary>The largest <c>f_handle</c> the kernel returns; a <c>struct file_handle</c> is an 8-byte header before it.</summary>
    internal const int MAX_HANDLE_SZ = 128;

    /// <summary><c>name_to_handle_at(2)</c>; <paramref name="handle"/> is a <c>struct file_handle</c> with room after it.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int name_to_handle_at(SafeHandle dirfd, ReadOnlySpan<byte> path, Span<byte> handle, out int mountId, int flags);

    /// <summary><c>name_to_handle_at(2)</c> on a raw descriptor.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int name_to_handle_at(int dirfd, ReadOnlySpan<byte> path, Span<byte> handle, out int mountId, int flags);

    /// <summary><c>open_by_handle_at(2)</c>: needs CAP_DAC_READ_SEARCH; <paramref name="mountFd"/> must not be O_PATH.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int open_by_handle_at(SafeHandle mountFd, ReadOnlySpan<byte> handle, int flags);
}
