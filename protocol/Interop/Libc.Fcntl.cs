using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>The descriptor table: fcntl(2) with an integer argument, dup(2) and close_range(2).</summary>
internal static partial class Libc
{
    internal const int F_DUPFD = 0;
    internal const int F_GETFD = 1;
    internal const int F_SETFD = 2;
    internal const int F_GETFL = 3;
    internal const int F_SETFL = 4;
    internal const int F_DUPFD_CLOEXEC = 1030;
    internal const int FD_CLOEXEC = 1;

    /// <summary>close_range(2)'s flag that sets FD_CLOEXEC on the range instead of closing it (Linux 5.11).</summary>
    internal const int CLOSE_RANGE_CLOEXEC = 4;

    /// <summary><c>fcntl(2)</c> with an int argument (0 for the commands that take none).</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fcntl(int fd, int cmd, int arg);

    /// <summary><c>dup(2)</c>: the copy has FD_CLOEXEC clear.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int dup(SafeHandle fd);

    /// <summary><c>dup(2)</c> of a descriptor its caller keeps open.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int dup(int fd);

    /// <summary><c>close_range(2)</c>: closes, or with <see cref="CLOSE_RANGE_CLOEXEC"/> marks close-on-exec, every open descriptor from <paramref name="first"/> to <paramref name="last"/>.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int close_range(uint first, uint last, int flags);
}
