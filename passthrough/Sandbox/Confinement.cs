using System.Globalization;
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
    private SeccompFilter? _filter;

    private Confinement(ControlListener? control, string root, SeccompFilter? filter)
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

    /// <summary>Applies everything but the filter; throws <see cref="ConfinementException"/>, <see cref="SeccompException"/> or <see cref="ControlSocketException"/>.</summary>
    public static Confinement Enter(DaemonCommand.Settings settings)
    {
        var share = settings.Share;
        var mode = share.Sandbox;
        if (mode is SandboxMode.Namespace or SandboxMode.Chroot)
        {
            if (System.Runtime.CompilerServices.RuntimeFeature.IsDynamicCodeSupported)
                throw new ConfinementException($"--sandbox {ShareVocabulary.Name(mode)} needs the native build of the daemon (dist/passthrough, from .ci/build): this one runs on the .NET runtime, which loads its files from the host after the root has changed; use the native build or pass --sandbox none.");
            if (Libc.geteuid() != 0)
                throw new ConfinementException($"--sandbox {ShareVocabulary.Name(mode)} needs root, in the host's user namespace or in the one fuse_launcher makes when the vdev is not root; start the daemon through fuse_launcher, or pass --sandbox none.");
            if (mode == SandboxMode.Namespace && Libc.getpid() != 1)
                throw new ConfinementException("--sandbox namespace: the daemon is not in namespaces of its own; fuse_launcher creates them when it starts the daemon, so start it through fuse_launcher, or pass --sandbox chroot or none.");
        }

        CheckIdMap(share.UidMap, "uid");
        CheckIdMap(share.GidMap, "gid");

        if (NofileLimit(share) is { } limit)
        {
            if (Libc.setrlimit(Libc.RLIMIT_NOFILE, new RLimit { Current = limit, Maximum = limit }) != 0)
                throw new ConfinementException($"--rlimit-nofile {limit}: setrlimit failed with {Libc.Describe(Libc.LastErrno)}; choose a limit up to fs.nr_open (above the hard limit the daemon needs CAP_SYS_RESOURCE), or 0 to leave the limit as it is.");
        }
        else if (!share.HasRlimitNofile)
        {
            RaiseNofileLimit();
        }

        var control = settings.ControlSocket is not { } path ? null
            : settings.ControlFd is int controlFd ? ControlListener.Adopt(controlFd, path) : ControlListener.Bind(path);
        SeccompFilter? filter = null;
        try
        {
            filter = share.Seccomp == SeccompAction.None ? null : SeccompFilter.Compile(share.Seccomp,
                settings.MountPoint is null ? SyscallAllowlist.Names : [.. SyscallAllowlist.Names, .. SyscallAllowlist.DevFuse]);
            // Read once while /etc/localtime is reachable: log lines carry the local time.
            _ = TimeZoneInfo.Local;
            var root = settings.Share.SharedDir;
            // Taken before anything below could start a thread; the capabilities are dropped after the root changed.
            var threads = ThreadConfinement.ThreadIds();
            if (mode is SandboxMode.Namespace or SandboxMode.Chroot)
            {
                EnterRoot(mode, root);
                root = "/";
                if (control is not null) control.PathLeftBehind = true;
            }
            // A --mount daemon keeps them: it mounts and unmounts the host's FUSE mount.
            if (settings.MountPoint is null) DropCapabilities(share, threads);
            return new Confinement(control, root, filter);
        }
        catch
        {
            control?.Dispose();
            filter?.Dispose();
            throw;
        }
    }

    /// <summary>Loads the seccomp filter into the kernel for every thread of the process (no-op with <c>--seccomp none</c>); throws <see cref="SeccompException"/>.</summary>
    public void LoadFilter()
    {
        _filter?.Load();
        _filter = null;
    }

    public void Dispose() => _filter?.Dispose();

    /// <summary>
    /// With <c>--uid-map</c>/<c>--gid-map</c>, the daemon must be in a user namespace with exactly that map (made by
    /// fuse_launcher through unshare); anything else means the ids the guest sees are not the ones asked for.
    /// </summary>
    private static void CheckIdMap(string given, string kind)
    {
        if (given.Length == 0 || !ShareVocabulary.TryParseIdMap(given, out var map)) return;
        string actual;
        try { actual = File.ReadAllText($"/proc/self/{kind}_map"); }
        catch (IOException e) { throw new ConfinementException($"--{kind}-map {given}: /proc/self/{kind}_map cannot be read ({e.Message}); start the daemon through fuse_launcher."); }
        var fields = actual.Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries);
        if (fields.Length != 3 || fields[0] != map.Inside.ToString(CultureInfo.InvariantCulture) || fields[1] != map.Outside.ToString(CultureInfo.InvariantCulture)
            || fields[2] != map.Count.ToString(CultureInfo.InvariantCulture))
            throw new ConfinementException($"--{kind}-map {given}: the daemon's user namespace maps '{actual.Trim()}' instead; fuse_launcher makes that namespace when the vdev is not root, so start the daemon through it.");
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

    private static void DropCapabilities(ShareSettings share, List<int> threads)
    {
        if (!Capabilities.TryModify(Capabilities.DaemonDefault, share.Modcaps, out var keep, out var why))
            throw new ConfinementException($"--modcaps {share.Modcaps} {why}");
        if (ThreadConfinement.Drop(keep, threads) is { } problem)
            throw new ConfinementException($"capabilities: {problem}.");
    }
}
