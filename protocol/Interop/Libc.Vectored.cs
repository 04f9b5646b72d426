using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>Positioned vectored file I/O: the daemon's reads into and writes from guest memory.</summary>
internal static unsafe partial class Libc
{
    /// <summary>Most buffers one vectored call takes (IOV_MAX).</summary>
    internal const int IOV_MAX = 1024;

    /// <summary><c>preadv(2)</c>: reads into <paramref name="iovcnt"/> buffers (at most <see cref="IOV_MAX"/>) in order.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint preadv(SafeHandle fd, IoVec* iov, int iovcnt, long offset);

    /// <summary><c>pwritev(2)</c>: writes <paramref name="iovcnt"/> buffers (at most <see cref="IOV_MAX"/>) in order.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial nint pwritev(SafeHandle fd, IoVec* iov, int iovcnt, long offset);
}
