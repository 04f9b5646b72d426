using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

internal static partial class Libc
{
    internal const int X_OK = 1;
    internal const int W_OK = 2;
    internal const int R_OK = 4;

    [LibraryImport(Name, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int access(string path, int mode);

    /// <summary><c>faccessat(2)</c>; <paramref name="path"/> must be NUL-terminated.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int faccessat(int dirfd, ReadOnlySpan<byte> path, int mode, int flags);
}
