using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;
using Hypervisor.Passthrough.Interop;

namespace Hypervisor.Passthrough.Control;

/// <summary>A control socket path that cannot be used; the message says what to change.</summary>
public sealed class ControlSocketException(string message, Exception? inner = null) : IOException(message, inner);

/// <summary>
/// Creates the listening UNIX socket of the control service: a stale socket file is removed only
/// when nothing accepts connections on it, and the new file is chmod-ed to 0600 between bind and
/// listen, so that there is no moment at which another user could connect.
/// </summary>
internal static class ControlSocket
{
    // sockaddr_un.sun_path is 108 bytes including the terminating NUL.
    private const int MaxPathBytes = 107;
    private const int EPERM = 1, EACCES = 13, EADDRINUSE = 98, EROFS = 30;

    /// <summary>
    /// Binds, restricts and listens; returns the listening fd (close-on-exec) and the inode of
    /// the socket file, by which <see cref="UnlinkIfOurs"/> recognises it later.
    /// </summary>
    public static SafeFileHandle BindAndListen(string socketPath, int backlog, out ulong inode)
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

        SafeFileHandle socket = ControlSocketSyscalls.CreateUnixStreamSocket(out int errno)
            ?? throw new ControlSocketException($"No socket can be created for the control service ({Marshal.GetPInvokeErrorMessage(errno)}); raise the process's file descriptor limit.");
        bool bound = false;
        try
        {
            errno = ControlSocketSyscalls.Bind(socket, socketPath);
            if (errno != 0)
            {
                throw errno switch
                {
                    EADDRINUSE => new ControlSocketException($"The control socket \"{socketPath}\" was created by another process while starting; stop it or choose another path."),
                    EACCES or EROFS or EPERM => new ControlSocketException($"The control socket \"{socketPath}\" cannot be created because {directory} is not writable; choose a writable directory."),
                    _ => new ControlSocketException($"The control socket \"{socketPath}\" cannot be created ({Marshal.GetPInvokeErrorMessage(errno)}); choose another path."),
                };
            }
            bound = true;
            // Before listen(2) nobody can connect, so restricting the mode here leaves no window.
            File.SetUnixFileMode(socketPath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            ControlSocketSyscalls.TryGetFileType(socketPath, out _, out inode);
            errno = ControlSocketSyscalls.Listen(socket, backlog);
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
        uint type;
        try
        {
            if (!ControlSocketSyscalls.TryGetFileType(socketPath, out type, out _))
                return;
        }
        catch (IOException e)
        {
            throw new ControlSocketException($"The control socket path \"{socketPath}\" cannot be examined ({e.Message}); choose another path.", e);
        }
        if (type == ControlSocketSyscalls.S_IFDIR)
            throw new ControlSocketException($"The control socket path \"{socketPath}\" is a directory; choose a file path.");
        if (type != ControlSocketSyscalls.S_IFSOCK)
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
            if (ControlSocketSyscalls.TryGetFileType(socketPath, out uint type, out ulong current)
                && type == ControlSocketSyscalls.S_IFSOCK && current == inode)
                TryUnlink(socketPath);
        }
        catch (IOException)
        {
        }
    }

    private static void TryUnlink(string socketPath)
    {
        try
        {
            File.Delete(socketPath);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
