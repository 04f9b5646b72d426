using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>
/// The C library calls of the stack: one partial file per call or tight group of calls, compiled into each assembly
/// that uses them (README.md says how). Names are the C names; helpers built on them are PascalCase. Every call that
/// reports failure through errno is imported with <c>SetLastError = true</c>, so that <see cref="LastErrno"/> yields
/// that errno right after it. Values are the Linux ones, shared by x86_64 and arm64 unless a file says otherwise.
/// </summary>
internal static partial class Libc
{
    internal const string Name = "libc";

    /// <summary>The errno of the last call imported with SetLastError that this thread made.</summary>
    internal static int LastErrno => Marshal.GetLastPInvokeError();

    /// <summary>The text of an errno value and its number, e.g. "No such file or directory (errno 2)".</summary>
    internal static string Describe(int errno) => $"{Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})";

    internal const int EPERM = 1;
    internal const int ENOENT = 2;
    internal const int ESRCH = 3;
    internal const int EINTR = 4;
    internal const int EIO = 5;
    internal const int ENXIO = 6;
    internal const int EBADF = 9;
    internal const int ECHILD = 10;
    internal const int EAGAIN = 11;
    internal const int EACCES = 13;
    internal const int EEXIST = 17;
    internal const int ENODEV = 19;
    internal const int ENOTDIR = 20;
    internal const int EINVAL = 22;
    internal const int EMFILE = 24;
    internal const int EROFS = 30;
    internal const int ENOTSOCK = 88;
    internal const int EOPNOTSUPP = 95;
    internal const int EADDRINUSE = 98;
    internal const int ECONNABORTED = 103;
    internal const int ECONNRESET = 104;

    /// <summary>The directory argument of the *at calls that means the current directory.</summary>
    internal const int AT_FDCWD = -100;
    internal const int AT_SYMLINK_NOFOLLOW = 0x100;
    internal const int AT_REMOVEDIR = 0x200;
    internal const int AT_EACCESS = 0x200;
    internal const int AT_SYMLINK_FOLLOW = 0x400;
    internal const int AT_EMPTY_PATH = 0x1000;
}
