using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>
/// The path forms of the xattr calls (paths and names NUL-terminated). The daemon uses them on <c>/proc/self/fd/N</c>
/// of an O_PATH descriptor: the magic link resolves to the inode itself (a symlink included, which is not followed
/// further), so one form serves every file type.
/// </summary>
internal static partial class Libc
{
    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint getxattr(ReadOnlySpan<byte> path, ReadOnlySpan<byte> name, Span<byte> value, nuint size);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int setxattr(ReadOnlySpan<byte> path, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, nuint size, int flags);

    /// <summary>setxattr(2) that does not follow a final symlink: used on <c>/proc/self/fd/DIR/NAME</c> to label a new entry.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int lsetxattr(ReadOnlySpan<byte> path, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, nuint size, int flags);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint listxattr(ReadOnlySpan<byte> path, Span<byte> list, nuint size);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int removexattr(ReadOnlySpan<byte> path, ReadOnlySpan<byte> name);
}
