using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>The descriptor table: fcntl(2) with an integer argument, and dup(2).</summary>
internal static partial class Libc
{
    internal const int F_DUPFD = 0;
    internal const int F_GETFD = 1;
    internal const int F_SETFD = 2;
    internal const int F_GETFL = 3;
    internal const int F_SETFL = 4;
    internal const int F_DUPFD_CLOEXEC = 1030;
    internal const int FD_CLOEXEC = 1;

    /// <summary><c>fcntl(2)</c> with an int argument (0 for the commands that take none).</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fcntl(int fd, int cmd, int arg);

    /// <summary><c>dup(2)</c>: the copy has FD_CLOEXEC clear.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int dup(SafeHandle fd);

    /// <summary><c>dup(2)</c> of a descriptor its caller keeps open.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int dup(int fd);
}
