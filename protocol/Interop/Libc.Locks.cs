using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>Open file description locks (fcntl F_OFD_*) and flock(2).</summary>
internal static partial class Libc
{
    internal const int F_RDLCK = 0;
    internal const int F_WRLCK = 1;
    internal const int F_UNLCK = 2;
    internal const int F_OFD_GETLK = 36;
    internal const int F_OFD_SETLK = 37;
    internal const int F_OFD_SETLKW = 38;
    internal const int LOCK_SH = 1;
    internal const int LOCK_EX = 2;
    internal const int LOCK_NB = 4;
    internal const int LOCK_UN = 8;

    /// <summary><c>fcntl(2)</c> with a <c>struct flock</c> argument (F_OFD_GETLK / F_OFD_SETLK / F_OFD_SETLKW).</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fcntl(SafeHandle fd, int cmd, ref Flock lk);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int flock(SafeHandle fd, int operation);
}
