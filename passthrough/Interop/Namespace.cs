using System.Runtime.InteropServices;

namespace Hypervisor.Passthrough.Interop;

internal static partial class Libc
{
    /// <summary>
    /// <c>setfsuid(2)</c>: glibc calls the raw syscall, which changes only the calling thread's credentials (unlike
    /// setuid, which glibc broadcasts to every thread). Returns the previous fsuid.
    /// </summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int setfsuid(uint fsuid);

    /// <summary><c>setfsgid(2)</c>, per thread like <see cref="setfsuid"/> (no SetLastError, for the same reason).</summary>
    [LibraryImport(Name)]
    internal static partial int setfsgid(uint fsgid);

    /// <summary><c>unshare(2)</c>.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int unshare(int flags);

    /// <summary><c>umask(2)</c>: per fs_struct, so per thread after <c>unshare(CLONE_FS)</c>.</summary>
    [LibraryImport(Name)]
    internal static partial uint umask(uint mask);

    /// <summary><c>geteuid(2)</c>.</summary>
    [LibraryImport(Name)]
    internal static partial uint geteuid();
}
