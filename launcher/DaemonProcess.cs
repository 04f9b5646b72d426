using System.Runtime.InteropServices;
using Hypervisor.Launcher.Interop;

namespace Hypervisor.Launcher;

/// <summary>
/// One started daemon, seen from the launcher: its pid, a pidfd that polls readable when it exits, the read end
/// of its ready pipe and the read end of its stdout/stderr pipe.
/// </summary>
/// <remarks>
/// The daemon is started with posix_spawn because .NET's Process can neither start a new session nor hand over
/// chosen descriptors. In the child: setsid (POSIX_SPAWN_SETSID) so that the daemon is its own session and process
/// group and no hangup of the launcher's terminal reaches it; every signal back to its default disposition and an
/// empty signal mask (the .NET runtime ignores SIGPIPE, which exec would otherwise pass on); stdin /dev/null; stdout
/// and stderr the capture pipe (or the <c>--log-file</c>); the ready pipe's write end on <see cref="LaunchSettings.ReadyFdNumber"/>; each
/// inherited descriptor dup2'ed onto its own number, which glibc (as POSIX 2024 requires) turns into clearing
/// FD_CLOEXEC in the child only; every descriptor above those closed (closefrom); cwd "/" so that the daemon pins
/// no directory of whoever started it (all paths handed over are absolute).
/// </remarks>
internal sealed class DaemonProcess : IDisposable
{
    private DaemonProcess(int pid, FdHandle pidFd, FdHandle ready, FdHandle? output, long logStart)
    {
        Pid = pid;
        PidFd = pidFd;
        Ready = ready;
        Output = output;
        LogStart = logStart;
    }

    /// <summary>The daemon's pid, which is also its session and process group id.</summary>
    public int Pid { get; }

    /// <summary>Polls readable once the daemon has exited.</summary>
    public FdHandle PidFd { get; }

    /// <summary>The read end of the ready pipe (non-blocking).</summary>
    public FdHandle Ready { get; }

    /// <summary>The read end of the daemon's stdout/stderr (non-blocking); null when they go to <c>--log-file</c>.</summary>
    public FdHandle? Output { get; }

    /// <summary>The size of the <c>--log-file</c> before the daemon started: where its output begins.</summary>
    public long LogStart { get; }

    /// <summary>Whether the daemon has been reaped (it is then gone and its pid must not be signalled again).</summary>
    public bool Reaped { get; private set; }

    /// <summary>Its wait status once reaped.</summary>
    public int WaitStatus { get; private set; }

    /// <summary>Starts the daemon for <paramref name="settings"/>; throws <see cref="SpawnException"/> when exec fails.</summary>
    public static DaemonProcess Start(LaunchSettings settings)
    {
        var (readyRead, readyWrite) = Libc.CreatePipe(nonBlockingRead: true);
        FdHandle? outputRead, outputWrite;
        long logStart = 0;
        if (settings.LogFile is null)
        {
            (outputRead, outputWrite) = Libc.CreatePipe(nonBlockingRead: true);
        }
        else
        {
            int log = Libc.Open(settings.LogFile, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_APPEND | Libc.O_CLOEXEC, 0b110_100_000 /* 0640 */);
            // A socket cannot be reopened through /proc (ENXIO): a vdev run by systemd has the journal's stream
            // socket as stderr and passes /proc/self/fd/2. That descriptor is inherited here under the same
            // number, so the daemon shares it instead.
            if (log < 0 && Libc.LastErrno == Libc.ENXIO && ProcSelfFd(settings.LogFile) is int inheritedFd)
                log = Libc.Fcntl(inheritedFd, Libc.F_DUPFD_CLOEXEC, 3);
            if (log < 0)
            {
                readyRead.Dispose();
                readyWrite.Dispose();
                throw new SpawnException($"Cannot open --log-file {settings.LogFile}: {Libc.Describe(Libc.LastErrno)}; choose a file fuse_launcher can write.");
            }
            outputRead = null;
            outputWrite = new FdHandle(log);
            // The size of what was opened, not of the path: for /proc/self/fd/N (how the vdev passes its stderr)
            // the path is a symlink whose own size is 64, which FileInfo would report.
            logStart = Math.Max(0, Libc.Lseek(log, 0, Libc.SEEK_END));
        }
        int readyFd = settings.ReadyFdNumber();
        var argv = settings.DaemonArguments(readyFd);
        Libc.CloseOnExecExcept(settings.InheritedFds);

        int highest = readyFd;
        foreach (var fd in settings.InheritedFds) highest = Math.Max(highest, fd);

        nint actions = 0, attr = 0, sigMask = 0, sigDefault = 0, argvBlock = 0;
        var strings = new List<nint>(argv.Count);
        bool actionsReady = false, attrReady = false;
        int pid;
        try
        {
            unsafe
            {
                // Safe: each block is allocated zeroed with more room than glibc's type needs (see the size constants)
                // and freed in the finally below, after posix_spawn has returned and nothing refers to it any more.
                actions = (nint)NativeMemory.AllocZeroed(Libc.FileActionsSize);
                attr = (nint)NativeMemory.AllocZeroed(Libc.SpawnAttrSize);
                sigMask = (nint)NativeMemory.AllocZeroed(Libc.SigSetSize);
                sigDefault = (nint)NativeMemory.AllocZeroed(Libc.SigSetSize);
                argvBlock = (nint)NativeMemory.AllocZeroed((nuint)((argv.Count + 1) * sizeof(nint)));
            }
            Check(Libc.FileActionsInit(actions), "posix_spawn_file_actions_init");
            actionsReady = true;
            Check(Libc.SpawnAttrInit(attr), "posix_spawnattr_init");
            attrReady = true;

            // Order matters: the standard streams first, then the ready pipe (whose number may be that of one of the
            // launcher's pipe ends, already copied by then), then the inherited descriptors, then closefrom.
            Check(Libc.FileActionsAddOpen(actions, 0, "/dev/null", Libc.O_RDONLY, 0), "addopen /dev/null");
            Check(Libc.FileActionsAddDup2(actions, outputWrite.Fd, 1), "adddup2 stdout");
            Check(Libc.FileActionsAddDup2(actions, outputWrite.Fd, 2), "adddup2 stderr");
            Check(Libc.FileActionsAddDup2(actions, readyWrite.Fd, readyFd), "adddup2 ready");
            foreach (var fd in settings.InheritedFds)
                Check(Libc.FileActionsAddDup2(actions, fd, fd), $"adddup2 {fd}");
            Check(Libc.FileActionsAddCloseFrom(actions, highest + 1), "addclosefrom");
            Check(Libc.FileActionsAddChdir(actions, "/"), "addchdir");

            Libc.SigEmptySet(sigMask);
            Libc.SigFillSet(sigDefault);
            Check(Libc.SpawnAttrSetSigMask(attr, sigMask), "posix_spawnattr_setsigmask");
            Check(Libc.SpawnAttrSetSigDefault(attr, sigDefault), "posix_spawnattr_setsigdefault");
            Check(Libc.SpawnAttrSetFlags(attr, Libc.POSIX_SPAWN_SETSID | Libc.POSIX_SPAWN_SETSIGMASK | Libc.POSIX_SPAWN_SETSIGDEF), "posix_spawnattr_setflags");

            for (int i = 0; i < argv.Count; i++)
            {
                var s = Marshal.StringToCoTaskMemUTF8(argv[i]);
                strings.Add(s);
                Marshal.WriteIntPtr(argvBlock, i * IntPtr.Size, s);
            }

            int error = Libc.PosixSpawn(out pid, strings[0], actions, attr, argvBlock, Libc.Environ());
            if (error != 0)
                throw new SpawnException($"Could not start {argv[0]}: {Libc.Describe(error)}; check --passthrough.");
        }
        catch
        {
            readyRead.Dispose();
            outputRead?.Dispose();
            throw;
        }
        finally
        {
            foreach (var s in strings) Marshal.ZeroFreeCoTaskMemUTF8(s);
            if (actionsReady) Libc.FileActionsDestroy(actions);
            if (attrReady) Libc.SpawnAttrDestroy(attr);
            unsafe
            {
                // Safe: these blocks were allocated above (or are zero, which NativeMemory.Free accepts).
                NativeMemory.Free((void*)actions);
                NativeMemory.Free((void*)attr);
                NativeMemory.Free((void*)sigMask);
                NativeMemory.Free((void*)sigDefault);
                NativeMemory.Free((void*)argvBlock);
            }
            // The write ends now live in the daemon only, so end of file on the read ends means the daemon closed them.
            readyWrite.Dispose();
            outputWrite.Dispose();
        }

        int pidFd = Libc.PidFdOpen(pid, 0);
        if (pidFd < 0)
        {
            int errno = Libc.LastErrno;
            // Without a pidfd there is no reliable exit signal; stop the daemon rather than leave it unwatched.
            Libc.Kill(-pid, Libc.SIGKILL);
            Libc.WaitPid(pid, out _, 0);
            readyRead.Dispose();
            outputRead?.Dispose();
            throw new SpawnException($"pidfd_open({pid}) failed: {Libc.Describe(errno)}; fuse_launcher needs Linux 5.3 or later.");
        }
        return new DaemonProcess(pid, new FdHandle(pidFd), readyRead, outputRead, logStart);

        static void Check(int result, string what)
        {
            if (result != 0) throw new SpawnException($"{what} failed: {Libc.Describe(result)}.");
        }
    }

    /// <summary>
    /// Waits up to <paramref name="timeoutMs"/> (-1: no limit) for the daemon to exit, without reaping it: until it
    /// is reaped its pid, and so its process group id, cannot be reused, which keeps signalling the group safe.
    /// </summary>
    public bool WaitForExit(int timeoutMs)
    {
        if (Reaped) return true;
        long deadline = timeoutMs < 0 ? long.MaxValue : Environment.TickCount64 + timeoutMs;
        Span<Libc.PollFd> fds = stackalloc Libc.PollFd[1];
        while (true)
        {
            long left = deadline - Environment.TickCount64;
            if (left < 0) left = 0;
            fds[0] = new Libc.PollFd { Fd = PidFd.Fd, Events = Libc.POLLIN };
            int n = Libc.Poll(fds, timeoutMs < 0 ? -1 : (int)Math.Min(left, int.MaxValue));
            if (n > 0) return true;
            if (n == 0) return false;
            if (Libc.LastErrno != Libc.EINTR) throw new IOException($"poll on the daemon's pidfd failed: {Libc.Describe(Libc.LastErrno)}.");
        }
    }

    /// <summary>
    /// Stops the daemon and everything in its process group, then reaps it: SIGTERM first (so that a FUSE mount
    /// is unmounted cleanly), SIGKILL to the group after <paramref name="graceMs"/> or once the daemon is gone
    /// (for children it left behind), then waitpid. The group is addressed by the daemon's pid, still reserved
    /// because the daemon is not reaped until the end, so no unrelated process can be hit.
    /// </summary>
    public void Stop(int graceMs)
    {
        if (Reaped) return;
        Libc.Kill(-Pid, Libc.SIGTERM);
        WaitForExit(graceMs);
        Libc.Kill(-Pid, Libc.SIGKILL);
        WaitForExit(-1);
        Reap();
    }

    /// <summary>Reaps the daemon once it has exited (the pidfd said so) and records its wait status.</summary>
    public void Reap()
    {
        if (Reaped) return;
        int status;
        while (Libc.WaitPid(Pid, out status, 0) < 0)
        {
            if (Libc.LastErrno != Libc.EINTR) { status = 0; break; }
        }
        WaitStatus = status;
        Reaped = true;
    }

    public void Dispose()
    {
        PidFd.Dispose();
        Ready.Dispose();
        Output?.Dispose();
    }

    /// <summary>N when <paramref name="path"/> is <c>/proc/self/fd/N</c> or <c>/dev/fd/N</c>, else null.</summary>
    private static int? ProcSelfFd(string path)
    {
        foreach (var prefix in new[] { "/proc/self/fd/", "/dev/fd/" })
            if (path.StartsWith(prefix, StringComparison.Ordinal)
                && int.TryParse(path.AsSpan(prefix.Length), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int fd))
                return fd;
        return null;
    }
}

/// <summary>The daemon could not be started at all (exec failed); the message says why.</summary>
internal sealed class SpawnException(string message) : Exception(message);
