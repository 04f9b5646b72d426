using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Hypervisor.Interop;

/// <summary>UNIX stream sockets: the vhost-user channel and the control socket.</summary>
internal static partial class Libc
{
    internal const int AF_UNIX = 1;
    internal const int SOCK_STREAM = 1;
    internal const int SOCK_SEQPACKET = 5;
    internal const int SOCK_CLOEXEC = 0x80000;
    internal const int SOL_SOCKET = 1;
    internal const int SO_TYPE = 3;
    internal const int SO_SNDBUF = 7;
    internal const int SO_RCVBUF = 8;
    internal const int SO_PEERCRED = 17;
    internal const int SO_ACCEPTCONN = 30;
    internal const int SO_DOMAIN = 39;
    internal const int SHUT_RDWR = 2;

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int socket(int domain, int type, int protocol);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int socketpair(int domain, int type, int protocol, Span<int> sv);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int bind(SafeHandle fd, in SockaddrUn addr, uint addrlen);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int connect(SafeHandle fd, in SockaddrUn addr, uint addrlen);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int listen(SafeHandle fd, int backlog);

    /// <summary><c>accept4(2)</c> without the peer's address (UNIX peers have none worth reading).</summary>
    internal static int accept4(SafeHandle fd, int flags) => accept4(fd, 0, 0, flags);

    [LibraryImport(Name, SetLastError = true)]
    private static partial int accept4(SafeHandle fd, nint addr, nint addrlen, int flags);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int shutdown(SafeHandle fd, int how);

    /// <summary><c>getsockopt(2)</c> of an int option.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int getsockopt(SafeHandle fd, int level, int name, out int value, ref uint length);

    /// <summary><c>setsockopt(2)</c> of an int option.</summary>
    [LibraryImport(Name, SetLastError = true)]
    internal static partial int setsockopt(SafeHandle fd, int level, int name, in int value, uint length);

    [LibraryImport(Name, SetLastError = true)]
    internal static partial int getsockname(SafeHandle fd, out SockaddrUn addr, ref uint addrlen);

    /// <summary>
    /// The filesystem path a UNIX socket is bound to (getsockname), or null when <paramref name="fd"/> is not
    /// a socket, not AF_UNIX, unbound or bound to an abstract name.
    /// </summary>
    internal static string? BoundUnixPath(SafeHandle fd)
    {
        uint length = (uint)Marshal.SizeOf<SockaddrUn>();
        return getsockname(fd, out var address, ref length) < 0 ? null : address.FilesystemPath(length);
    }

    /// <summary>
    /// The credentials (pid, uid, gid) the kernel recorded for the peer of a connected UNIX socket when it connected
    /// (SO_PEERCRED). False if the option cannot be read, which for a UNIX stream socket only happens once it is closed.
    /// </summary>
    internal static bool TryGetPeerCredentials(Socket socket, out Ucred credentials)
    {
        credentials = default;
        try
        {
            if (socket.GetRawSocketOption(SOL_SOCKET, SO_PEERCRED, MemoryMarshal.AsBytes(new Span<Ucred>(ref credentials))) != Marshal.SizeOf<Ucred>())
                return false;
        }
        catch (SocketException)
        {
            return false;
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
        return true;
    }
}
