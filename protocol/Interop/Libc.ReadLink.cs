using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

internal static partial class Libc
{
    /// <summary><c>readlinkat(2)</c>: the target is not NUL-terminated; the result is its length.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint readlinkat(SafeHandle dirfd, ReadOnlySpan<byte> path, Span<byte> buf, nuint size);

    /// <summary><c>readlinkat(2)</c> with a raw directory fd.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint readlinkat(int dirfd, ReadOnlySpan<byte> path, Span<byte> buf, nuint size);
}
