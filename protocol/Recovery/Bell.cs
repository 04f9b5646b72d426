using Hypervisor.Interop;

namespace Hypervisor.Protocol.Recovery;

/// <summary>
/// An eventfd that one process rings and another waits on, handed to a daemon with its ring descriptors: the vdev's
/// <c>restart=N</c> bell (a daemon rings it after writing a restart request into the state store) and a standby
/// daemon's <c>takeover=N</c> bell (the vdev rings it once the daemon before has answered everything it was sent).
/// </summary>
public sealed class Bell : IDisposable
{
    private readonly SafeFd _fd;

    private Bell(SafeFd fd) => _fd = fd;

    /// <summary>A new bell (close-on-exec until <see cref="SetInheritable"/>).</summary>
    public static Bell Create() => new(Libc.EventFd(Libc.EFD_NONBLOCK));

    /// <summary>Takes over the descriptor <paramref name="fd"/> another process passed (it becomes close-on-exec and owned by the bell).</summary>
    public static Bell Adopt(int fd)
    {
        if (fd < 0 || Libc.fcntl(fd, Libc.F_GETFD, 0) < 0)
            throw new IOException($"The bell descriptor {fd} is not open in this process; the vdev must let it be inherited.");
        Libc.fcntl(fd, Libc.F_SETFD, Libc.FD_CLOEXEC);
        return new Bell(new SafeFd(fd));
    }

    /// <summary>The descriptor.</summary>
    public int Fd => (int)_fd.DangerousGetHandle();

    /// <summary>Rings the bell (it stays rung until <see cref="Drain"/>).</summary>
    public void Ring() => Libc.EventFdSignal(_fd);

    /// <summary>Quiets the bell.</summary>
    public void Drain() => Libc.EventFdDrain(_fd);

    /// <summary>Waits up to <paramref name="timeoutMs"/> (-1: no limit) for the bell; true when it rang.</summary>
    public bool Wait(int timeoutMs) => Libc.PollReadable(_fd, timeoutMs) > 0;

    /// <summary>
    /// Waits for the bell or for <paramref name="stop"/> (readable when set; negative: none); bit 0 set when the bell
    /// rang, bit 1 when <paramref name="stop"/> did. <paramref name="timeoutMs"/> bounds one wait (-1: none).
    /// </summary>
    public int WaitOr(int stop, int timeoutMs)
    {
        bool added = false;
        _fd.DangerousAddRef(ref added);
        try
        {
            Span<PollFd> fds = stackalloc PollFd[2];
            fds[0] = new PollFd { Fd = Fd, Events = Libc.POLLIN };
            fds[1] = new PollFd { Fd = stop, Events = Libc.POLLIN };
            int r = Libc.poll(fds, 2, timeoutMs);
            if (r <= 0) return 0;
            return (fds[0].Revents != 0 ? 1 : 0) | (fds[1].Revents != 0 ? 2 : 0);
        }
        finally
        {
            if (added) _fd.DangerousRelease();
        }
    }

    /// <summary>Makes the descriptor inheritable (true) while fuse_launcher is being started, close-on-exec again after.</summary>
    public void SetInheritable(bool inheritable)
    {
        int flags = Libc.fcntl(Fd, Libc.F_GETFD, 0);
        if (flags < 0) return;
        Libc.fcntl(Fd, Libc.F_SETFD, inheritable ? flags & ~Libc.FD_CLOEXEC : flags | Libc.FD_CLOEXEC);
    }

    /// <summary>Closes the descriptor.</summary>
    public void Dispose() => _fd.Dispose();
}
