using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Hypervisor.Passthrough.Interop;

/// <summary>
/// The few syscalls the control socket needs that .NET does not wrap: the daemon's effective uid
/// (to compare with the peer's SO_PEERCRED uid) and socket/bind/listen (to bind and chmod the
/// listening socket before Kestrel takes it over).
/// </summary>
internal static partial class ControlSocketSyscalls
{
    private const int SOL_SOCKET = 1;
    private const int SO_PEERCRED = 17;

    [LibraryImport("libc", EntryPoint = "geteuid")]
    private static partial uint GetEffectiveUidNative();

    private const int AT_FDCWD = -100;
    private const int AT_SYMLINK_NOFOLLOW = 0x100;
    private const uint STATX_TYPE = 0x1;
    private const uint STATX_INO = 0x100;
    private const int ENOENT = 2;

    /// <summary>S_IFMT and the file types the control socket code distinguishes.</summary>
    public const uint S_IFMT = 0xF000, S_IFSOCK = 0xC000, S_IFLNK = 0xA000, S_IFDIR = 0x4000;

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int StatxNative(int dirfd, string path, int flags, uint mask, Span<byte> statxBuffer);

    /// <summary>
    /// lstat-like query through statx(2), whose struct layout is the same on every architecture
    /// (unlike struct stat): the file type bits of stx_mode and stx_ino, without following a
    /// final symlink. Returns false if the path does not exist.
    /// </summary>
    /// <exception cref="IOException">statx failed for another reason than ENOENT.</exception>
    public static bool TryGetFileType(string path, out uint fileType, out ulong inode)
    {
        // struct statx is 256 bytes; stx_mode is a __u16 at offset 28, stx_ino a __u64 at offset 32.
        Span<byte> buffer = stackalloc byte[256];
        fileType = 0;
        inode = 0;
        if (StatxNative(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_TYPE | STATX_INO, buffer) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno == ENOENT)
                return false;
            throw new IOException($"statx of \"{path}\" failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}).");
        }
        fileType = MemoryMarshal.Read<ushort>(buffer[28..]) & S_IFMT;
        inode = MemoryMarshal.Read<ulong>(buffer[32..]);
        return true;
    }

    /// <summary>geteuid(2); cannot fail.</summary>
    public static uint GetEffectiveUid() => GetEffectiveUidNative();

    private const int AF_UNIX = 1;
    private const int SOCK_STREAM = 1;
    private const int SOCK_CLOEXEC = 0x80000;

    [LibraryImport("libc", EntryPoint = "socket", SetLastError = true)]
    private static partial int SocketNative(int domain, int type, int protocol);

    [LibraryImport("libc", EntryPoint = "bind", SetLastError = true)]
    private static partial int BindNative(SafeHandle fd, ReadOnlySpan<byte> address, int addressLength);

    [LibraryImport("libc", EntryPoint = "listen", SetLastError = true)]
    private static partial int ListenNative(SafeHandle fd, int backlog);

    /// <summary>socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0).</summary>
    /// <returns>The fd, or null with <paramref name="errno"/> set.</returns>
    public static SafeFileHandle? CreateUnixStreamSocket(out int errno)
    {
        int fd = SocketNative(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        errno = fd < 0 ? Marshal.GetLastPInvokeError() : 0;
        return fd < 0 ? null : new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>
    /// bind(2) to a filesystem path. The path must fit sun_path (107 bytes plus NUL); the caller
    /// checks that. Returns 0 or the errno.
    /// </summary>
    /// <remarks>
    /// System.Net.Sockets.Socket is not used for this socket because disposing a Socket that bound
    /// a path unlinks the path, and the listening fd is handed to Kestrel, which outlives it.
    /// </remarks>
    public static int Bind(SafeHandle fd, string path)
    {
        // struct sockaddr_un { sa_family_t sun_family; char sun_path[108]; }
        Span<byte> address = stackalloc byte[110];
        address.Clear();
        MemoryMarshal.Write(address, (ushort)AF_UNIX);
        int length = System.Text.Encoding.UTF8.GetBytes(path, address[2..^1]);
        return BindNative(fd, address, 2 + length + 1) == 0 ? 0 : Marshal.GetLastPInvokeError();
    }

    /// <summary>listen(2); returns 0 or the errno.</summary>
    public static int Listen(SafeHandle fd, int backlog)
        => ListenNative(fd, backlog) == 0 ? 0 : Marshal.GetLastPInvokeError();

    /// <summary>
    /// The credentials (pid, uid, gid) the kernel recorded for the peer of a connected UNIX
    /// socket when it connected (SO_PEERCRED, struct ucred). Returns false if the option cannot
    /// be read, which for a UNIX stream socket only happens when it is already closed.
    /// </summary>
    public static bool TryGetPeerCredentials(Socket socket, out int pid, out uint uid, out uint gid)
    {
        Span<byte> ucred = stackalloc byte[12];
        pid = 0;
        uid = gid = uint.MaxValue;
        try
        {
            if (socket.GetRawSocketOption(SOL_SOCKET, SO_PEERCRED, ucred) != 12)
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
        pid = MemoryMarshal.Read<int>(ucred);
        uid = MemoryMarshal.Read<uint>(ucred[4..]);
        gid = MemoryMarshal.Read<uint>(ucred[8..]);
        return true;
    }
}
