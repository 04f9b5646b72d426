using System.Runtime.InteropServices;

namespace Hypervisor.Passthrough.Interop;

internal static partial class Libc
{
    /// <summary><c>fcntl(2)</c> with a <c>struct flock</c> argument (F_OFD_GETLK / F_OFD_SETLK / F_OFD_SETLKW).</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int fcntl(SafeFd fd, int cmd, ref Flock lk);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int flock(SafeFd fd, int operation);
}
