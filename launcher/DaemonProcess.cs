using System.Runtime.InteropServices;
using Hypervisor.Interop;
using Hypervisor.Protocol.Share;

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
    private DaemonProcess(int pid, SafeFd pidFd, SafeFd ready, SafeFd? output, long logStart)
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
    public SafeFd PidFd { get; }

    /// <summary>The read end of the ready pipe (non-blocking).</summary>
    public SafeFd Ready { get; }

    /// <summary>The read end of the daemon's stdout/stderr (non-blocking); null when they go to <c>--log-file</c>.</summary>
    public SafeFd? Output { get; }

    /// <summary>The size of the <c>--log-file</c> before the daemon started: where its output begins.</summary>
    public long LogStart { get; }

    /// <summary>Whether the daemon was started as the first process of a new pid namespace (<c>--sandbox namespace</c>).</summary>
    public bool InOwnPidNamespace { get; private set; }

    /// <summary>Whether the daemon has been reaped (it is then gone and its pid must not be signalled again).</summary>
    public bool Reaped { get; private set; }

    /// <summary>Its wait status once reaped.</summary>
    public int WaitStatus { get; private set; }

    /// <summary>
    /// Starts the daemon for <paramref name="settings"/>; throws <see cref="SpawnException"/> when exec fails. A problem
    /// that does not stop the start (releasing the spawn attributes) is reported as a warning line on
    /// <paramref name="stderr"/>.
    /// </summary>
    public static DaemonProcess Start(LaunchSettings settings, TextWriter stderr)
    {
        if (settings.Share.Sandbox is not (Sandbox.Namespace or Sandbox.Unspecified)) return StartHere(settings, stderr, []);
        if (Libc.geteuid() != 0)
        {
            // A user namespace can only be made by a process with one thread, which no .NET process is: util-linux's
            // unshare makes it and the others, writes the id maps (through newuidmap/newgidmap for ranges beyond the
            // vdev's own ids), forks the daemon as pid 1 of the new pid namespace and waits for it; given a user
            // namespace to join (--user-namespace-fd), nsenter joins it first and unshare makes only the others.
            // The control socket is bound here, as the vdev's user: bound inside, it would belong to whatever the
            // namespace's root is outside, which the vdev may not be able to connect as.
            if (settings.Share.ControlSocket.Length == 0) return StartInUserNamespace(settings, stderr);
            var path = settings.Share.ControlSocket;
            SafeFd control;
            ulong inode;
            try { control = ControlSocket.BindAndListen(path, backlog: 64, out inode); }
            catch (ControlSocketException e) { throw new SpawnException(e.Message); }
            try
            {
                var withSocket = settings with { ControlFd = control.Value, InheritedFds = [.. settings.InheritedFds.Append(control.Value).Order()] };
                var inUserNamespace = StartInUserNamespace(withSocket, stderr);
                inUserNamespace.ControlSocketPath = (path, inode);
                return inUserNamespace;
            }
            catch
            {
                ControlSocket.UnlinkIfOurs(path, inode);
                throw;
            }
            finally
            {
                // The daemon holds its own copy from here on.
                control.Dispose();
            }
        }
        // Namespaces belong to the thread that unshares them, and the processes it then starts are created in them; a
        // thread of its own keeps the launcher's other threads where they are. The daemon is the first process of the
        // new pid namespace (pid 1 there) and sees host mounts come and go, but none of its own leave.
        DaemonProcess? started = null;
        Exception? failed = null;
        var thread = new Thread(() =>
        {
            try
            {
                if (Libc.unshare(Libc.CLONE_NEWNS | Libc.CLONE_NEWPID | Libc.CLONE_NEWNET | Libc.CLONE_NEWIPC | Libc.CLONE_NEWUTS) != 0)
                    throw new SpawnException($"sandbox: creating the daemon's namespaces failed with {Libc.Describe(Libc.LastErrno)}; the host may forbid new namespaces (e.g. in a container): pass --sandbox chroot or none.");
                if (Libc.mount("none", "/", "", Libc.MS_REC | Libc.MS_SLAVE, null) != 0)
                    throw new SpawnException($"sandbox: making the daemon's mounts one-way failed with {Libc.Describe(Libc.LastErrno)}; pass --sandbox chroot or none.");
                started = StartHere(settings, stderr, []);
                started.InOwnPidNamespace = true;
            }
            catch (Exception e)
            {
                failed = e;
            }
        }) { Name = "namespaces" };
        thread.Start();
        thread.Join();
        if (failed is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failed);
        return started!;
    }

    private static DaemonProcess StartInUserNamespace(LaunchSettings settings, TextWriter stderr)
    {
        var prefix = settings.UserNamespaceFd is int joined
            ? JoinUserNamespaceCommand($"/proc/{Environment.ProcessId}/fd/{joined}")
            : UserNamespaceCommand(settings.Share);
        var started = StartHere(settings, stderr, prefix);
        started.InOwnPidNamespace = true;
        started.InUserNamespace = true;
        return started;
    }

    /// <summary>util-linux's unshare, which makes the user namespace of the sandbox when the vdev is not root.</summary>
    internal const string Unshare = "/usr/bin/unshare";

    /// <summary>
    /// The unshare command line that runs the daemon in new user, mount, pid, net, ipc and uts namespaces, root inside
    /// (the id maps given, else the caller's uid and gid as 0), with one-way mounts; the daemon gets SIGTERM if unshare dies.
    /// </summary>
    internal static List<string> UserNamespaceCommand(ShareSettings share)
    {
        var args = new List<string> { Unshare, "--user", "--mount", "--pid", "--net", "--ipc", "--uts", "--fork", "--kill-child=SIGTERM", "--propagation", "slave" };
        // A range map goes through newuidmap/newgidmap, and the caller's own id need not be in it, so unshare then becomes
        // root of the namespace explicitly; a single id written by unshare itself is the caller's, mapped to 0 (which also
        // denies setgroups, so no --setgid then).
        if (ShareVocabulary.TryParseNamespaceMap(share.UidMap, out var uids))
            args.AddRange([$"--map-users={uids.Outside},{uids.Inside},{uids.Count}", "--setuid", "0"]);
        else
            args.Add("--map-user=0");
        if (ShareVocabulary.TryParseNamespaceMap(share.GidMap, out var gids))
            args.AddRange([$"--map-groups={gids.Outside},{gids.Inside},{gids.Count}", "--setgid", "0"]);
        else
            args.Add("--map-group=0");
        args.Add("--");
        return args;
    }

    /// <summary>util-linux's nsenter, which joins a user namespace kept from an earlier daemon of the share.</summary>
    internal const string Nsenter = "/usr/bin/nsenter";

    /// <summary>
    /// The command line that runs the daemon in the user namespace <paramref name="userNamespace"/> names (a path nsenter
    /// opens) and in new mount, pid, net, ipc and uts namespaces made inside it, root there, with one-way mounts; the
    /// daemon gets SIGTERM if unshare dies.
    /// </summary>
    /// <remarks>
    /// The namespace's id maps were written when it was made, so nothing here needs privilege: setns(2) into a user
    /// namespace asks for CAP_SYS_ADMIN in it, which its owner (the vdev's uid, from the parent namespace) has, and a
    /// single-threaded caller, which nsenter is (the .NET launcher is not). nsenter then drops supplementary groups and
    /// becomes uid and gid 0 there, as unshare's <c>--setuid 0 --setgid 0</c> does for a new namespace, and holds every
    /// capability of the namespace, which unshare needs for the others. The path is this launcher's
    /// <c>/proc/PID/fd/N</c>, not an inherited descriptor: nsenter opens it itself, and the daemon it ends in keeps
    /// no descriptor of its namespace.
    /// </remarks>
    internal static List<string> JoinUserNamespaceCommand(string userNamespace) =>
    [
        Nsenter, $"--user={userNamespace}", "--",
        Unshare, "--mount", "--pid", "--net", "--ipc", "--uts", "--fork", "--kill-child=SIGTERM", "--propagation", "slave", "--",
    ];

    /// <summary>The control socket fuse_launcher bound for the daemon (user namespace only): removed if the daemon does not start.</summary>
    public (string Path, ulong Inode)? ControlSocketPath { get; private set; }

    /// <summary>Whether the daemon runs under unshare in a user namespace of its own (the vdev is not root).</summary>
    public bool InUserNamespace { get; private set; }

    /// <summary>
    /// The daemon's own pid: <see cref="Pid"/>, or in a user namespace the child that unshare forked (which exists once
    /// the daemon has reported ready); null when it cannot be found.
    /// </summary>
    public int? DaemonPid()
    {
        if (!InUserNamespace) return Pid;
        try
        {
            var children = File.ReadAllText($"/proc/{Pid}/task/{Pid}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries);
            return children.Length == 1 && int.TryParse(children[0], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int child) ? child : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    private static DaemonProcess StartHere(LaunchSettings settings, TextWriter stderr, List<string> prefix)
    {
        if (prefix.Count > 0 && prefix.FirstOrDefault(p => p.StartsWith('/') && !File.Exists(p)) is { } missing)
            throw new SpawnException($"sandbox: the vdev is not root, so the daemon's namespaces need a user namespace, which {missing} (util-linux) makes or joins; install util-linux (and uidmap for --uid-map/--gid-map ranges) or pass --sandbox chroot or none.");
        var (readyRead, readyWrite) = Descriptors.CreatePipe(nonBlockingRead: true);
        SafeFd? outputRead, outputWrite;
        long logStart = 0;
        if (settings.LogFile is null)
        {
            (outputRead, outputWrite) = Descriptors.CreatePipe(nonBlockingRead: true);
        }
        else
        {
            int log = Libc.open(settings.LogFile, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_APPEND | Libc.O_CLOEXEC, 0b110_100_000 /* 0640 */);
            // A socket cannot be reopened through /proc (ENXIO): a vdev run by systemd has the journal's stream
            // socket as stderr and passes /proc/self/fd/2; a pipe another user created is refused (EACCES) to a
            // launcher that is not root. That descriptor is inherited here under the same number, so the daemon
            // shares it instead.
            if (log < 0 && Libc.LastErrno is Libc.ENXIO or Libc.EACCES && Descriptors.WritableSelfFd(settings.LogFile) is int inheritedFd)
                log = Libc.fcntl(inheritedFd, Libc.F_DUPFD_CLOEXEC, 3);
            if (log < 0)
            {
                readyRead.Dispose();
                readyWrite.Dispose();
                throw new SpawnException($"Cannot open --log-file {settings.LogFile}: {Libc.Describe(Libc.LastErrno)}; choose a file fuse_launcher can write.");
            }
            outputRead = null;
            outputWrite = new SafeFd(log);
            // The size of what was opened, not of the path: for /proc/self/fd/N (how the vdev passes its stderr)
            // the path is a symlink whose own size is 64, which FileInfo would report.
            logStart = Math.Max(0, Libc.lseek(log, 0, Libc.SEEK_END));
        }
        int readyFd = settings.ReadyFdNumber();
        var argv = prefix.Concat(settings.DaemonArguments(readyFd)).ToList();
        Descriptors.CloseOnExecExcept(settings.InheritedFds);

        int highest = readyFd;
        foreach (var fd in settings.InheritedFds) highest = Math.Max(highest, fd);

        nint actions = 0, attr = 0, sigMask = 0, sigDefault = 0, argvBlock = 0;
        var strings = new List<nint>(argv.Count);
        bool actionsReady = false, attrReady = false;
        int pid;
        try
        {
            // Zeroed, with more room than glibc's types need (see the size constants); freed in the finally below, after
            // posix_spawn has returned and nothing refers to them any more.
            actions = Libc.AllocSpawnBlock(Libc.FileActionsSize);
            attr = Libc.AllocSpawnBlock(Libc.SpawnAttrSize);
            sigMask = Libc.AllocSpawnBlock(Libc.SigSetSize);
            sigDefault = Libc.AllocSpawnBlock(Libc.SigSetSize);
            argvBlock = Libc.AllocSpawnBlock((nuint)((argv.Count + 1) * IntPtr.Size));
            Check(Libc.posix_spawn_file_actions_init(actions), "posix_spawn_file_actions_init");
            actionsReady = true;
            Check(Libc.posix_spawnattr_init(attr), "posix_spawnattr_init");
            attrReady = true;

            // Order matters: the standard streams first, then the ready pipe (whose number may be that of one of the
            // launcher's pipe ends, already copied by then), then the inherited descriptors, then closefrom.
            Check(Libc.posix_spawn_file_actions_addopen(actions, 0, "/dev/null", Libc.O_RDONLY, 0), "addopen /dev/null");
            Check(Libc.posix_spawn_file_actions_adddup2(actions, outputWrite.Value, 1), "adddup2 stdout");
            Check(Libc.posix_spawn_file_actions_adddup2(actions, outputWrite.Value, 2), "adddup2 stderr");
            Check(Libc.posix_spawn_file_actions_adddup2(actions, readyWrite.Value, readyFd), "adddup2 ready");
            foreach (var fd in settings.InheritedFds)
                Check(Libc.posix_spawn_file_actions_adddup2(actions, fd, fd), $"adddup2 {fd}");
            Check(Libc.posix_spawn_file_actions_addclosefrom_np(actions, highest + 1), "addclosefrom");
            Check(Libc.posix_spawn_file_actions_addchdir_np(actions, "/"), "addchdir");

            Libc.sigemptyset(sigMask);
            Libc.sigfillset(sigDefault);
            Check(Libc.posix_spawnattr_setsigmask(attr, sigMask), "posix_spawnattr_setsigmask");
            Check(Libc.posix_spawnattr_setsigdefault(attr, sigDefault), "posix_spawnattr_setsigdefault");
            Check(Libc.posix_spawnattr_setflags(attr, Libc.POSIX_SPAWN_SETSID | Libc.POSIX_SPAWN_SETSIGMASK | Libc.POSIX_SPAWN_SETSIGDEF), "posix_spawnattr_setflags");

            for (int i = 0; i < argv.Count; i++)
            {
                var s = Marshal.StringToCoTaskMemUTF8(argv[i]);
                strings.Add(s);
                Marshal.WriteIntPtr(argvBlock, i * IntPtr.Size, s);
            }

            int error = Libc.posix_spawn(out pid, strings[0], actions, attr, argvBlock, Libc.Environ());
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
            // glibc's destroy functions only free what init allocated; a failure leaks that memory and nothing else, so
            // the start goes on and the failure is reported.
            if (actionsReady && Libc.posix_spawn_file_actions_destroy(actions) is int actionsError and not 0)
                stderr.WriteLine($"fuse_launcher: warning: posix_spawn_file_actions_destroy failed: {Libc.Describe(actionsError)}.");
            if (attrReady && Libc.posix_spawnattr_destroy(attr) is int attrError and not 0)
                stderr.WriteLine($"fuse_launcher: warning: posix_spawnattr_destroy failed: {Libc.Describe(attrError)}.");
            Libc.FreeSpawnBlock(actions);
            Libc.FreeSpawnBlock(attr);
            Libc.FreeSpawnBlock(sigMask);
            Libc.FreeSpawnBlock(sigDefault);
            Libc.FreeSpawnBlock(argvBlock);
            // The write ends now live in the daemon only, so end of file on the read ends means the daemon closed them.
            readyWrite.Dispose();
            outputWrite.Dispose();
        }

        int pidFd = Libc.pidfd_open(pid, 0);
        if (pidFd < 0)
        {
            int errno = Libc.LastErrno;
            // Without a pidfd there is no reliable exit signal; stop the daemon rather than leave it unwatched.
            Libc.kill(-pid, Libc.SIGKILL);
            Libc.waitpid(pid, out _, 0);
            readyRead.Dispose();
            outputRead?.Dispose();
            throw new SpawnException($"pidfd_open({pid}) failed: {Libc.Describe(errno)}; fuse_launcher needs Linux 5.3 or later.");
        }
        return new DaemonProcess(pid, new SafeFd(pidFd), readyRead, outputRead, logStart);

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
        Span<PollFd> fds = stackalloc PollFd[1];
        while (true)
        {
            long left = deadline - Environment.TickCount64;
            if (left < 0) left = 0;
            fds[0] = new PollFd { Fd = PidFd.Value, Events = Libc.POLLIN };
            int n = Libc.poll(fds, 1, timeoutMs < 0 ? -1 : (int)Math.Min(left, int.MaxValue));
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
        Libc.kill(-Pid, Libc.SIGTERM);
        WaitForExit(graceMs);
        Libc.kill(-Pid, Libc.SIGKILL);
        WaitForExit(-1);
        Reap();
    }

    /// <summary>Reaps the daemon once it has exited (the pidfd said so) and records its wait status.</summary>
    public void Reap()
    {
        if (Reaped) return;
        int status;
        while (Libc.waitpid(Pid, out status, 0) < 0)
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
}

/// <summary>The daemon could not be started at all (exec failed); the message says why.</summary>
internal sealed class SpawnException(string message) : Exception(message);
