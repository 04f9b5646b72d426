using Hypervisor.Interop;

namespace Hypervisor.Vdev.VhostUser;

/// <summary>
/// The listening UNIX socket: created at <c>--socket-path</c> (and removed again on dispose) or inherited
/// as <c>--fd</c> (already bound and listening, as libvirt hands it over).
/// </summary>
internal sealed class VhostUserListener : IDisposable
{
    private readonly SafeFd _fd;
    private readonly string? _path;

    private VhostUserListener(SafeFd fd, string? path)
    {
        _fd = fd;
        _path = path;
    }

    /// <summary>
    /// Creates, binds and listens at <paramref name="path"/>; throws <see cref="ListenerException"/> with a sentence
    /// saying what to change. With <paramref name="group"/> the socket file gets that group and mode 0770 (as virtiofsd's
    /// --socket-group, whose socket is created under umask 007), so the VMM may run as a member of the group.
    /// </summary>
    public static VhostUserListener Bind(string path, uint? group = null)
    {
        RemoveStaleSocket(path);
        if (SockaddrUn.Create(path, out _) < 0) throw new ListenerException($"The socket path '{path}' is longer than the {SockaddrUn.MaxPathBytes} bytes a UNIX socket address holds; use a shorter --socket-path.");
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir != null && !Directory.Exists(dir)) throw new ListenerException($"The directory of --socket-path '{path}' does not exist; create '{dir}' or choose another path.");
        // The file appears under its own name only once it listens, with its group and mode: a VMM (or libvirt) that
        // waits for the file may connect at once. So it is bound under a name of this process first and then linked to
        // its name without replacing anything (File.Move without overwrite links, then unlinks the first name). Where
        // that name would not fit a socket address, the socket is bound in place.
        string staging = $"{path}.{Environment.ProcessId}.new";
        bool staged = SockaddrUn.Create(staging, out _) >= 0;
        string bound = staged ? staging : path;
        if (staged) TryDelete(staging);
        SafeFd fd = BindAndListen(bound, path, group);
        if (staged)
        {
            try
            {
                File.Move(staging, path, overwrite: false);
            }
            catch (IOException e)
            {
                fd.Dispose();
                TryDelete(staging);
                throw File.Exists(path)
                    ? new ListenerException($"The socket path '{path}' is already in use (another backend, or a stale socket); stop that process or remove the file.")
                    : new ListenerException($"The socket '{path}' cannot be put in place ({e.Message}); choose a --socket-path in a directory this user may write.");
            }
        }
        return new VhostUserListener(fd, path);
    }

    /// <summary>Binds a new socket at <paramref name="bound"/>, listens, and gives it <paramref name="group"/>; error sentences name <paramref name="path"/>.</summary>
    private static SafeFd BindAndListen(string bound, string path, uint? group)
    {
        int len = SockaddrUn.Create(bound, out var addr);
        int raw = Libc.socket(Libc.AF_UNIX, Libc.SOCK_STREAM | Libc.SOCK_CLOEXEC, 0);
        if (raw < 0) throw SyscallException.Last("socket");
        var fd = new SafeFd(raw);
        if (Libc.bind(fd, addr, (uint)len) < 0)
        {
            int e = Libc.LastErrno;
            fd.Dispose();
            throw e switch
            {
                Libc.EADDRINUSE => new ListenerException($"The socket path '{path}' is already in use (another backend, or a stale socket); stop that process or remove the file."),
                Libc.EACCES => new ListenerException($"Permission denied creating the socket '{path}'; choose a --socket-path in a directory this user may write."),
                _ => new SyscallException($"bind to '{bound}'", e),
            };
        }
        if (Libc.listen(fd, 1) < 0)
        {
            var ex = SyscallException.Last("listen");
            fd.Dispose();
            TryDelete(bound);
            throw ex;
        }
        if (group is { } gid && (Libc.chown(bound, uint.MaxValue, gid) != 0 || Libc.chmod(bound, 0x1F8 /* 0770 */) != 0))
        {
            var e = Libc.LastErrno;
            fd.Dispose();
            TryDelete(bound);
            throw new ListenerException($"The socket '{path}' cannot be given group {gid} ({new Hypervisor.Protocol.Fuse.Errno(e)}); run the vdev as root or as a member of that group, or drop --socket-group.");
        }
        return fd;
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>
    /// A socket file nobody accepts on (left by a killed backend) is removed so the VMM can be restarted
    /// against the same path; a live one is left alone and reported by bind.
    /// </summary>
    private static void RemoveStaleSocket(string path)
    {
        if (Libc.FileType(path, out uint type, out _) != 0 || type != Libc.S_IFSOCK) return;
        try
        {
            using var probe = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
            probe.Connect(new System.Net.Sockets.UnixDomainSocketEndPoint(path));
        }
        catch (System.Net.Sockets.SocketException e) when (e.SocketErrorCode == System.Net.Sockets.SocketError.ConnectionRefused)
        {
            File.Delete(path);
        }
        catch (System.Net.Sockets.SocketException)
        {
            // Anything else: leave the file; bind reports the conflict.
        }
    }

    /// <summary>Adopts an inherited listening socket; throws <see cref="ListenerException"/> when it is not one.</summary>
    public static VhostUserListener Adopt(int fdNumber)
    {
        var fd = new SafeFd(fdNumber);
        uint l = sizeof(int);
        if (Libc.getsockopt(fd, Libc.SOL_SOCKET, Libc.SO_ACCEPTCONN, out int v, ref l) < 0)
        {
            int e = Libc.LastErrno;
            fd.SetHandleAsInvalid();
            throw new ListenerException(e == Libc.ENOTSOCK
                ? $"--fd {fdNumber} is not a socket; pass the number of the listening UNIX socket the VMM manager handed over."
                : $"--fd {fdNumber} is not an open file descriptor; pass the number of an inherited listening socket.");
        }
        if (v == 0)
        {
            fd.SetHandleAsInvalid();
            throw new ListenerException($"--fd {fdNumber} is a socket that is not listening; pass a socket on which listen() was called.");
        }
        return new VhostUserListener(fd, null);
    }

    /// <summary>Waits for one connection; null when <paramref name="stop"/> fired first.</summary>
    public SafeFd? Accept(SafeFd stop)
    {
        while (true)
        {
            if (!Libc.WaitReadable(_fd, stop)) return null;
            int c = Libc.accept4(_fd, Libc.SOCK_CLOEXEC);
            if (c >= 0) return new SafeFd(c);
            int e = Libc.LastErrno;
            if (e is Libc.EINTR or Libc.EAGAIN or Libc.ECONNABORTED) continue;
            throw new SyscallException("accept4", e);
        }
    }

    public void Dispose()
    {
        _fd.Dispose();
        if (_path != null) try { File.Delete(_path); } catch (IOException) { }
    }
}

/// <summary>A configuration problem with the listening socket, worded for the user.</summary>
internal sealed class ListenerException(string message) : Exception(message);
