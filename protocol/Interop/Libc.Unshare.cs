using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>unshare(2) and umask(2): a thread's own fs_struct (CLONE_FS) makes its umask its own.</summary>
internal static partial class Libc
{
    internal const int CLONE_FS = 0x200;

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int unshare(int flags);

    /// <summary><c>umask(2)</c>: per fs_struct, so per thread after <c>unshare(CLONE_FS)</c>; cannot fail.</summary>
    [LibraryImport(Name)]
    internal static partial uint umask(uint mask);
}
