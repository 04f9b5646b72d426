using System.Net.Sockets;
using System.Text;
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

    /// <summary>Binds, restricts and listens; returns the socket and the inode of its file.</summary>
    public static Socket BindAndListen(string socketPath, int backlog, out ulong inode)
    {
        if (!OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException("The control socket needs Linux (SO_PEERCRED, statx).");
        if (string.IsNullOrEmpty(socketPath))
            throw new ControlSocketException("The control socket path is empty; give a file path such as /run/hypervisor/share.sock.");
        if (Encoding.UTF8.GetByteCount(socketPath) > MaxPathBytes)
            throw new ControlSocketException($"The control socket path \"{socketPath}\" is longer than {MaxPathBytes} bytes; choose a shorter path.");

        string? directory = Path.GetDirectoryName(Path.GetFullPath(socketPath));
        if (directory is not null && !Directory.Exists(directory))
            throw new ControlSocketException($"The directory of the control socket \"{socketPath}\" does not exist; create {directory} first.");

        RemoveIfStale(socketPath);

        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        bool bound = false;
        try
        {
            try
            {
                socket.Bind(new UnixDomainSocketEndPoint(socketPath));
                bound = true;
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
            {
                throw new ControlSocketException($"The control socket \"{socketPath}\" was created by another process while starting; stop it or choose another path.", e);
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.AccessDenied)
            {
                throw new ControlSocketException($"The control socket \"{socketPath}\" cannot be created because {directory} is not writable; choose a writable directory.", e);
            }
            catch (SocketException e)
            {
                throw new ControlSocketException($"The control socket \"{socketPath}\" cannot be created ({e.Message}); choose another path.", e);
            }
            // Before listen(2) nobody can connect, so restricting the mode here leaves no window.
            File.SetUnixFileMode(socketPath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            ControlSocketSyscalls.TryGetFileType(socketPath, out _, out inode);
            socket.Listen(backlog);
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
