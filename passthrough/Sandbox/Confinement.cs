using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using Hypervisor.Interop;
using Hypervisor.Passthrough.Cli;
using Hypervisor.Passthrough.Control;
using Hypervisor.Protocol.Share;
using SandboxMode = Hypervisor.Protocol.Share.Sandbox;

namespace Hypervisor.Passthrough.Sandbox;

/// <summary>A part of the sandbox that could not be set up; the message names the part, the reason and what to change.</summary>
public sealed class ConfinementException(string message) : Exception(message);

/// <summary>
/// Confines the daemon before it serves anything, the way virtiofsd confines itself, in this order:
/// <list type="number">
/// <item>RLIMIT_NOFILE (<c>--rlimit-nofile</c>), while the daemon may still raise it.</item>
/// <item>The control socket is bound, while its path is still the host's.</item>
/// <item>The seccomp filter is compiled (libseccomp is loaded from the host's /usr now; loaded into the kernel later).</item>
/// <item><c>namespace</c>: fuse_launcher started the daemon as pid 1 of new mount, pid, net, ipc and uts namespaces, with
/// mount events from the host flowing in and none out. The daemon mounts a private /proc for its pid namespace, opens
/// its /proc/self/fd, bind-mounts the share onto itself, pivots into it and detaches the old root: nothing of the host's
/// filesystem is left. <c>chroot</c>: the same /proc/self/fd, then chroot into the share. Either way the working
/// directory becomes that /proc/self/fd (<see cref="ProcPath"/>).</item>
/// <item>Capabilities (ring daemons): every thread keeps exactly <see cref="Capabilities.DaemonDefault"/> changed by
/// <c>--modcaps</c>, in its effective, permitted and bounding sets; NoNewPrivs is set. The .NET runtime has already
/// started its finalizer thread, and capabilities belong to each thread, so the finalizer thread drops them too, and
/// every thread's /proc status is checked afterwards.</item>
/// </list>
/// The filter itself is loaded by <see cref="LoadFilter"/> just before the daemon reports ready, on every thread at
/// once (TSYNC).
/// </summary>
public sealed class Confinement : IDisposable
{
    private nint _filter;

    private Confinement(ControlListener? control, string root, nint filter)
    {
        Control = control;
        Root = root;
        _filter = filter;
    }

    /// <summary>The bound control socket, or null without <c>--control-socket</c>.</summary>
    public ControlListener? Control { get; }

    /// <summary>Where the shared directory is now: <c>/</c> in a sandbox, else its host path.</summary>
    public string Root { get; }

    /// <summary>The descriptor limit <c>--rlimit-nofile</c> asks for; null when it is not given or 0 (the limit is left).</summary>
    public static ulong? NofileLimit(ShareSettings share) => share.HasRlimitNofile && share.RlimitNofile != 0 ? share.RlimitNofile : null;

    /// <summary>
    /// Without <c>--rlimit-nofile</c>, raises the limit to fs.nr_open as virtiofsd does, where the daemon may
    /// (CAP_SYS_RESOURCE); without that capability the hard limit stays, which the runtime has made the soft one too.
    /// </summary>
    private static void RaiseNofileLimit()
    {
        ulong nrOpen;
        try { nrOpen = ulong.Parse(File.ReadAllText("/proc/sys/fs/nr_open").Trim(), CultureInfo.InvariantCulture); }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException) { return; }
        if (Libc.getrlimit(Libc.RLIMIT_NOFILE, out var now) == 0 && now.Maximum < nrOpen)
            _ = Libc.setrlimit(Libc.RLIMIT_NOFILE, new RLimit { Current = nrOpen, Maximum = nrOpen });
    }

    /// <summary>Applies everything but the filter; throws <see cref="ConfinementException"/> or <see cref="ControlSocketException"/>.</summary>
    public static Confinement Enter(DaemonCommand.Settings settings)
    {
        var share = settings.Share;
        var mode = share.Sandbox;
        if (mode is SandboxMode.Namespace or SandboxMode.Chroot)
        {
            if (RuntimeFeature.IsDynamicCodeSupported)
                throw new ConfinementException($"--sandbox {ShareVocabulary.Name(mode)} needs the native build of the daemon (dist/passthrough, from .ci/build): this one runs on the .NET runtime, which loads its files from the host after the root has changed; use the native build or pass --sandbox none.");
            if (Libc.geteuid() != 0)
                throw new ConfinementException($"--sandbox {ShareVocabulary.Name(mode)} needs root (the user-namespace form of the sandbox is not implemented); run as root or pass --sandbox none.");
            if (mode == SandboxMode.Namespace && Libc.getpid() != 1)
                throw new ConfinementException("--sandbox namespace: the daemon is not in namespaces of its own; fuse_launcher creates them when it starts the daemon, so start it through fuse_launcher, or pass --sandbox chroot or none.");
        }

        if (NofileLimit(share) is { } limit)
        {
            if (Libc.setrlimit(Libc.RLIMIT_NOFILE, new RLimit { Current = limit, Maximum = limit }) != 0)
                throw new ConfinementException($"--rlimit-nofile {limit}: setrlimit failed with {Libc.Describe(Libc.LastErrno)}; choose a limit up to fs.nr_open (above the hard limit the daemon needs CAP_SYS_RESOURCE), or 0 to leave the limit as it is.");
        }
        else if (!share.HasRlimitNofile)
        {
            RaiseNofileLimit();
        }

        var control = settings.ControlSocket is { } path ? ControlListener.Bind(path) : null;
        nint filter = 0;
        try
        {
            filter = share.Seccomp == SeccompAction.None ? 0 : CompileFilter(share.Seccomp, settings.MountPoint is not null);
            // Read once while /etc/localtime is reachable: log lines carry the local time.
            _ = TimeZoneInfo.Local;
            var root = settings.Share.SharedDir;
            if (mode is SandboxMode.Namespace or SandboxMode.Chroot)
            {
                var threads = ThreadIds();
                EnterRoot(mode, root);
                root = "/";
                if (control is not null) control.PathLeftBehind = true;
                if (settings.MountPoint is null) DropCapabilities(share, threads);
            }
            else if (settings.MountPoint is null)
            {
                DropCapabilities(share, ThreadIds());
            }
            return new Confinement(control, root, filter);
        }
        catch
        {
            control?.Dispose();
            if (filter != 0) Libc.seccomp_release(filter);
            throw;
        }
    }

    /// <summary>Loads the seccomp filter into the kernel for every thread of the process (no-op with <c>--seccomp none</c>).</summary>
    public void LoadFilter()
    {
        if (_filter == 0) return;
        var rc = Libc.seccomp_load(_filter);
        if (rc != 0)
            throw new ConfinementException($"seccomp: loading the filter failed with {Libc.Describe(-rc)}; the kernel needs SECCOMP_FILTER_FLAG_TSYNC (Linux 3.17), or pass --seccomp none.");
        Libc.seccomp_release(_filter);
        _filter = 0;
    }

    public void Dispose()
    {
        if (_filter != 0) Libc.seccomp_release(_filter);
        _filter = 0;
    }

    private static nint CompileFilter(SeccompAction action, bool devFuse)
    {
        uint defaultAction = action switch
        {
            SeccompAction.Trap => Libc.SCMP_ACT_TRAP,
            SeccompAction.Log => Libc.SCMP_ACT_LOG,
            _ => Libc.SCMP_ACT_KILL_PROCESS,
        };
        nint context;
        try
        {
            context = Libc.seccomp_init(defaultAction);
        }
        catch (DllNotFoundException)
        {
            throw new ConfinementException($"seccomp: {Libc.Seccomp} is not installed; install libseccomp2, or pass --seccomp none.");
        }
        if (context == 0) throw new ConfinementException("seccomp: libseccomp could not create a filter; pass --seccomp none to run without one.");
        foreach (var names in devFuse ? [SyscallAllowlist.Names, SyscallAllowlist.DevFuse] : new[] { SyscallAllowlist.Names })
        {
            foreach (var name in names)
            {
                var number = Libc.seccomp_syscall_resolve_name(name);
                if (number < 0) continue;
                var rc = Libc.seccomp_rule_add(context, Libc.SCMP_ACT_ALLOW, number, 0);
                if (rc != 0)
                {
                    Libc.seccomp_release(context);
                    throw new ConfinementException($"seccomp: adding {name} to the filter failed with {Libc.Describe(-rc)}; pass --seccomp none to run without a filter.");
                }
            }
        }
        if (Libc.seccomp_attr_set(context, Libc.SCMP_FLTATR_CTL_TSYNC, 1) != 0)
        {
            Libc.seccomp_release(context);
            throw new ConfinementException("seccomp: this libseccomp cannot apply a filter to every thread (TSYNC); install libseccomp2 2.2 or later, or pass --seccomp none.");
        }
        return context;
    }

    private static void EnterRoot(SandboxMode mode, string share)
    {
        if (mode == SandboxMode.Namespace
            && Libc.mount("proc", "/proc", "proc", Libc.MS_NOSUID | Libc.MS_NODEV | Libc.MS_NOEXEC, null) != 0)
            Fail("mounting a private /proc for the daemon's pid namespace");
        // O_PATH: only to become the working directory; the /proc calls name entries relative to it.
        var procFd = Libc.open("/proc/self/fd", Libc.O_PATH | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        if (procFd < 0) Fail("opening /proc/self/fd");
        using var proc = new SafeFd(procFd);
        if (mode == SandboxMode.Namespace)
        {
            // pivot_root needs the new root to be a mount point; "." twice stacks the old root on top of the new one,
            // which the detach then removes, so no directory of the share is needed for it.
            if (Libc.mount(share, share, "", Libc.MS_BIND | Libc.MS_REC, null) != 0) Fail($"bind-mounting {share} onto itself");
            if (Libc.chdir(share) != 0) Fail($"entering {share}");
            if (Libc.pivot_root(".", ".") != 0) Fail($"pivot_root into {share}");
            if (Libc.umount2(".", Libc.MNT_DETACH) != 0) Fail("detaching the host's root");
        }
        else if (Libc.chroot(share) != 0)
        {
            Fail($"chroot into {share}");
        }
        if (Libc.chdir("/") != 0) Fail("entering the new root");
        if (Libc.fchdir(proc.Value) != 0) Fail("making /proc/self/fd the working directory");
        ProcPath.UseWorkingDirectory();
    }

    private static void Fail(string step) =>
        throw new ConfinementException($"sandbox: {step} failed with {Libc.Describe(Libc.LastErrno)}; the daemon must start as root (through fuse_launcher for --sandbox namespace), or pass --sandbox none.");

    private static List<int> ThreadIds()
    {
        var ids = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc/self/task"))
            ids.Add(int.Parse(Path.GetFileName(dir), CultureInfo.InvariantCulture));
        return ids;
    }

    private static void DropCapabilities(ShareSettings share, List<int> threads)
    {
        if (!Capabilities.TryModify(Capabilities.DaemonDefault, share.Modcaps, out var keep, out var why))
            throw new ConfinementException($"--modcaps {share.Modcaps} {why}");
        var self = DropOnThisThread(keep);
        if (self != 0) throw new ConfinementException($"capabilities: {self}");
        // The runtime's finalizer thread runs a finalizer of ours, and so drops them itself.
        var finalizer = OnFinalizerThread(() => DropOnThisThread(keep));
        if (finalizer != 0) throw new ConfinementException($"capabilities on the finalizer thread: {finalizer}");
        foreach (var tid in threads)
        {
            var status = ThreadStatus(tid);
            if (status is null) continue; // the thread has ended
            var expected = keep.ToString("x16", CultureInfo.InvariantCulture);
            foreach (var field in new[] { "CapEff", "CapPrm", "CapBnd" })
            {
                if (Field(status, field) != expected)
                    throw new ConfinementException($"capabilities: thread {tid} ({Field(status, "Name")}) still has {field} {Field(status, field)}, not {expected}; it was started before the sandbox and did not drop them.");
            }
            if (Field(status, "NoNewPrivs") != "1")
                throw new ConfinementException($"capabilities: thread {tid} ({Field(status, "Name")}) does not have NoNewPrivs.");
        }
    }

    /// <summary>Bounding set, then effective and permitted, inheritable and ambient cleared, NoNewPrivs: 0 or what failed.</summary>
    private static int DropOnThisThread(ulong keep)
    {
        for (int cap = 0; cap < 64; cap++)
        {
            if ((keep & (1UL << cap)) != 0) continue;
            // EINVAL: a capability this kernel does not have.
            if (Libc.prctl(Libc.PR_CAPBSET_DROP, (nuint)cap, 0, 0, 0) != 0 && Libc.LastErrno != Libc.EINVAL) return 1000 + Libc.LastErrno;
        }
        if (Libc.prctl(Libc.PR_CAP_AMBIENT, Libc.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return 2000 + Libc.LastErrno;
        if (Libc.SetThreadCapabilities(keep) != 0) return 3000 + Libc.LastErrno;
        if (Libc.prctl(Libc.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return 4000 + Libc.LastErrno;
        return 0;
    }

    private static int OnFinalizerThread(Func<int> action)
    {
        var result = new StrongBox<int>(int.MinValue);
        Queue(action, result);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        return result.Value;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Queue(Func<int> action, StrongBox<int> result) => _ = new FinalizerWork(action, result);

    private sealed class FinalizerWork(Func<int> action, StrongBox<int> result)
    {
        ~FinalizerWork() => result.Value = action();
    }

    /// <summary>A thread's /proc status, read relative to the working directory once it is /proc/self/fd.</summary>
    private static string? ThreadStatus(int tid)
    {
        var path = ProcPath.IsRelative ? $"../task/{tid}/status" : $"/proc/self/task/{tid}/status";
        var fd = Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (fd < 0) return null;
        using var file = new SafeFd(fd);
        var buffer = new byte[8192];
        var n = Libc.read(fd, buffer, (nuint)buffer.Length);
        return n <= 0 ? null : Encoding.ASCII.GetString(buffer, 0, (int)n);
    }

    private static string? Field(string status, string name)
    {
        foreach (var line in status.Split('\n'))
        {
            if (line.StartsWith(name + ":", StringComparison.Ordinal)) return line[(name.Length + 1)..].Trim();
        }
        return null;
    }
}
