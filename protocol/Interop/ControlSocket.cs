using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Hypervisor.Interop;

namespace Hypervisor.Interop;

/// <summary>A control socket path that cannot be used; the message says what to change.</summary>
internal sealed class ControlSocketException(string message, Exception? inner = null) : IOException(message, inner);

/// <summary>
/// Creates the listening UNIX socket of the control service: a stale socket file is removed only
/// when nothing accepts connections on it, and the new file is chmod-ed to 0600 between bind and
/// listen, so that there is no moment at which another user could connect.
/// </summary>
internal static class ControlSocket
{
    private const int MaxPathBytes = SockaddrUn.MaxPathBytes;

    /// <summary>
    /// Binds, restricts and listens; returns the listening fd (close-on-exec) and the inode of
    /// the socket file, by which <see cref="UnlinkIfOurs"/> recognises it later.
    /// </summary>
    public static SafeFd BindAndListen(string socketPath, int backlog, out ulong inode)
    {
        if (!OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException("The control socket needs Linux (SO_PEERCRED, statx).");
        if (string.IsNullOrEmpty(socketPath))
            throw new ControlSocketException("The control socket path is empty; give a file path such as /run/hypervisor/share.sock.");
        if (socketPath.Contains('\0') || Encoding.UTF8.GetByteCount(socketPath) > MaxPathBytes)
            throw new ControlSocketException($"The control socket path \"{socketPath}\" is longer than {MaxPathBytes} bytes; choose a shorter path.");

        string? directory = Path.GetDirectoryName(Path.GetFullPath(socketPath));
        if (directory is not null && !Directory.Exists(directory))
            throw new ControlSocketException($"The directory of the control socket \"{socketPath}\" does not exist; create {directory} first.");

        RemoveIfStale(socketPath);

        int fd = Libc.socket(Libc.AF_UNIX, Libc.SOCK_STREAM | Libc.SOCK_CLOEXEC, 0);
        if (fd < 0)
            throw new ControlSocketException($"No socket can be created for the control service ({Marshal.GetPInvokeErrorMessage(Libc.LastErrno)}); raise the process's file descriptor limit.");
        var socket = new SafeFd(fd);
        bool bound = false;
        try
        {
            // System.Net.Sockets.Socket is not used for this socket: disposing a Socket that bound a path unlinks the
            // path, and the listening fd is handed to Kestrel, which outlives it.
            uint length = (uint)SockaddrUn.Create(socketPath, out var address);
            int errno = Libc.bind(socket, address, length) == 0 ? 0 : Libc.LastErrno;
            if (errno != 0)
            {
                throw errno switch
                {
                    Libc.EADDRINUSE => new ControlSocketException($"The control socket \"{socketPath}\" was created by another process while starting; stop it or choose another path."),
                    Libc.EACCES or Libc.EROFS or Libc.EPERM => new ControlSocketException($"The control socket \"{socketPath}\" cannot be created because {directory} is not writable; choose a writable directory."),
                    _ => new ControlSocketException($"The control socket \"{socketPath}\" cannot be created ({Marshal.GetPInvokeErrorMessage(errno)}); choose another path."),
                };
            }
            bound = true;
            // Before listen(2) nobody can connect, so restricting the mode here leaves no window.
            File.SetUnixFileMode(socketPath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            TryGetFileType(socketPath, out _, out inode);
            errno = Libc.listen(socket, backlog) == 0 ? 0 : Libc.LastErrno;
            if (errno != 0)
                throw new ControlSocketException($"The control socket \"{socketPath}\" cannot listen ({Marshal.GetPInvokeErrorMessage(errno)}); choose another path.");
            return socket;
        }
        catch
        {
            socket.Dispose();
            if (bound)
                TryUnlink(socketPath);
            throw;
        }
    }

    /// <summary>
    /// Deletes <paramref name="socketPath"/> if it is a socket nobody listens on (left over by a
    /// daemon that died). A live socket, or a file of another kind, is an error: it may belong to
    /// another share, and deleting it would cut that share off from its operators.
    /// </summary>
    private static void RemoveIfStale(string socketPath)
    {
        if (!TryGetFileType(socketPath, out uint type, out _))
            return;
        if (type == Libc.S_IFDIR)
            throw new ControlSocketException($"The control socket path \"{socketPath}\" is a directory; choose a file path.");
        if (type != Libc.S_IFSOCK)
            throw new ControlSocketException($"The control socket path \"{socketPath}\" exists and is not a socket; remove it or choose another path.");

        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(socketPath));
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
        {
            // Nobody listens: a stale file.
            TryUnlink(socketPath);
            return;
        }
        catch (SocketException e)
        {
            throw new ControlSocketException($"The control socket \"{socketPath}\" exists and cannot be probed ({e.Message}); remove it or choose another path.", e);
        }
        throw new ControlSocketException($"The control socket \"{socketPath}\" is in use by a running process; stop it or choose another path.");
    }

    /// <summary>Unlinks the socket file if it is still the one we created (same inode).</summary>
    public static void UnlinkIfOurs(string socketPath, ulong inode)
    {
        try
        {
            if (TryGetFileType(socketPath, out uint type, out ulong current)
                && type == Libc.S_IFSOCK && current == inode)
                TryUnlink(socketPath);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>
    /// The file type bits (S_IFMT) and inode of <paramref name="path"/> itself, a final symlink not followed; false
    /// if it does not exist.
    /// </summary>
    /// <exception cref="ControlSocketException">statx failed for another reason than ENOENT.</exception>
    private static bool TryGetFileType(string path, out uint fileType, out ulong inode)
    {
        int errno = Libc.FileType(path, out fileType, out inode);
        if (errno == Libc.ENOENT) return false;
        if (errno != 0) throw new ControlSocketException($"The control socket path \"{path}\" cannot be examined ({Marshal.GetPInvokeErrorMessage(errno)}); choose another path.");
        return true;
    }

    /// <summary>
    /// The credentials (pid, uid, gid) the kernel recorded for the peer of a connected UNIX socket when it connected
    /// (SO_PEERCRED). False, with uid and gid -1, if they cannot be read, which only happens once the socket is closed.
    /// </summary>
    public static bool TryGetPeerCredentials(Socket socket, out int pid, out uint uid, out uint gid)
    {
        if (!Libc.TryGetPeerCredentials(socket, out var credentials))
        {
            pid = 0;
            uid = gid = uint.MaxValue;
            return false;
        }
        (pid, uid, gid) = (credentials.Pid, credentials.Uid, credentials.Gid);
        return true;
    }

    private static void TryUnlink(string socketPath)
    {
        try
        {
            File.Delete(socketPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }
}
