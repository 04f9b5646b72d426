using Hypervisor.Interop;

namespace Hypervisor.Launcher;

/// <summary>The launcher's own descriptor table: pipes to the daemon, the standard streams, and what exec passes on.</summary>
internal static class Descriptors
{
    /// <summary>Whether <paramref name="fd"/> is an open descriptor of this process (fcntl F_GETFD succeeds).</summary>
    public static bool IsOpen(int fd) => Libc.fcntl(fd, Libc.F_GETFD, 0) >= 0;

    /// <summary>Whether <paramref name="fd"/> is open without FD_CLOEXEC, i.e. could have been inherited through exec.</summary>
    public static bool IsInherited(int fd)
    {
        int flags = Libc.fcntl(fd, Libc.F_GETFD, 0);
        return flags >= 0 && (flags & Libc.FD_CLOEXEC) == 0;
    }

    /// <summary>
    /// N when <paramref name="path"/> is <c>/proc/self/fd/N</c> or <c>/dev/fd/N</c> and N is open for writing here: the
    /// vdev passes its stderr that way, and when /proc refuses to reopen it (a socket gives ENXIO; a pipe or terminal
    /// that another user created gives EACCES to a launcher that is not root), the inherited descriptor is shared instead.
    /// </summary>
    public static int? WritableSelfFd(string path)
    {
        foreach (var prefix in new[] { "/proc/self/fd/", "/dev/fd/" })
        {
            if (!path.StartsWith(prefix, StringComparison.Ordinal)
                || !int.TryParse(path.AsSpan(prefix.Length), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int fd))
                continue;
            int mode = Libc.fcntl(fd, Libc.F_GETFL, 0);
            return mode >= 0 && (mode & Libc.O_ACCMODE) != Libc.O_RDONLY ? fd : null;
        }
        return null;
    }

    /// <summary>Creates a close-on-exec pipe; the caller places the ends it hands over with spawn file actions.</summary>
    public static (SafeFd Read, SafeFd Write) CreatePipe(bool nonBlockingRead)
    {
        Span<int> fds = stackalloc int[2];
        if (Libc.pipe2(fds, Libc.O_CLOEXEC) != 0)
            throw new IOException($"pipe2 failed: {Libc.Describe(Libc.LastErrno)}.");
        var r = new SafeFd(fds[0]);
        var w = new SafeFd(fds[1]);
        // O_NONBLOCK so that a drain after poll never blocks on a pipe another process still holds open.
        if (nonBlockingRead && Libc.fcntl(fds[0], Libc.F_SETFL, Libc.O_NONBLOCK) != 0)
            throw new IOException($"fcntl(F_SETFL, O_NONBLOCK) failed: {Libc.Describe(Libc.LastErrno)}.");
        return (r, w);
    }

    /// <summary>Writes all of <paramref name="data"/> to a descriptor this code does not own; returns 0 or the errno.</summary>
    public static int WriteAll(int fd, ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            nint written = Libc.write(fd, data, (nuint)data.Length);
            if (written < 0)
            {
                int errno = Libc.LastErrno;
                if (errno == Libc.EINTR) continue;
                return errno;
            }
            data = data[(int)written..];
        }
        return 0;
    }

    /// <summary>
    /// Makes sure descriptors 0-2 are open (on /dev/null if not), so that no descriptor the launcher opens later
    /// lands on a standard stream number and is mistaken for one in the daemon.
    /// </summary>
    public static void EnsureStandardStreams()
    {
        for (int fd = 0; fd <= 2; fd++)
        {
            if (IsOpen(fd)) continue;
            // open(2) returns the lowest free number, which is this one.
            int opened = Libc.open("/dev/null", Libc.O_RDWR, 0);
            if (opened >= 0 && opened != fd) Libc.close(opened);
        }
    }

    /// <summary>
    /// Sets FD_CLOEXEC on every open descriptor of this process from 3 up that is not in <paramref name="keep"/>,
    /// so that a descriptor fuse_launcher inherited without being told to pass it on does not reach the daemon.
    /// </summary>
    /// <remarks>
    /// One close_range(CLOSE_RANGE_CLOEXEC) per gap between the kept numbers, rather than a walk of /proc/self/fd with an
    /// fcntl per entry; a kernel without the flag (before 5.11) gets the walk.
    /// </remarks>
    public static void CloseOnExecExcept(IReadOnlyList<int> keep)
    {
        var kept = new List<int>(keep.Count);
        foreach (var fd in keep)
        {
            if (fd > 2) kept.Add(fd);
        }
        kept.Sort();
        uint first = 3;
        foreach (var fd in kept)
        {
            if ((uint)fd > first && !MarkCloseOnExec(first, (uint)fd - 1)) { CloseOnExecExceptByWalk(keep); return; }
            first = Math.Max(first, (uint)fd + 1);
        }
        if (!MarkCloseOnExec(first, uint.MaxValue)) CloseOnExecExceptByWalk(keep);
    }

    private static bool MarkCloseOnExec(uint first, uint last) => Libc.close_range(first, last, Libc.CLOSE_RANGE_CLOEXEC) == 0;

    private static void CloseOnExecExceptByWalk(IReadOnlyList<int> keep)
    {
        foreach (var entry in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            if (!int.TryParse(Path.GetFileName(entry), out int fd) || fd <= 2 || keep.Contains(fd)) continue;
            int flags = Libc.fcntl(fd, Libc.F_GETFD, 0);
            if (flags >= 0 && (flags & Libc.FD_CLOEXEC) == 0) Libc.fcntl(fd, Libc.F_SETFD, flags | Libc.FD_CLOEXEC);
        }
    }
}
