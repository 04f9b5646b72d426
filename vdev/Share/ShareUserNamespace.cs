using Hypervisor.Interop;
using Hypervisor.Protocol.Share;

namespace Hypervisor.Vdev.Share;

/// <summary>
/// The user namespace a share's daemons live in when the vdev is not root and the share maps id ranges
/// (<c>--uid-map</c>/<c>--gid-map</c>): made once, for the first daemon, through newuidmap/newgidmap, and kept open by the
/// vdev for the share's life so that every later daemon (a relaunch after a crash, a planned restart's standby) joins
/// it instead of making one. A user namespace lives as long as a descriptor refers to it, with its id maps written;
/// joining it needs no privilege from its owner (the vdev's uid), so it works once the vdev has NoNewPrivs, which
/// disarms the set-user-ID newuidmap.
/// </summary>
internal static class ShareUserNamespace
{
    /// <summary>Whether the daemons of <paramref name="share"/> need a kept user namespace in a vdev with effective uid <paramref name="euid"/>.</summary>
    public static bool Needed(ShareSettings share, uint euid) =>
        euid != 0 && share.Sandbox is Sandbox.Namespace or Sandbox.Unspecified && (share.UidMap.Length > 0 || share.GidMap.Length > 0);

    /// <summary>
    /// Opens the user namespace of the share's first daemon <paramref name="pid"/>, which has confirmed its settings;
    /// throws <see cref="ShareStartException"/> with a sentence when it cannot be kept.
    /// </summary>
    /// <remarks>
    /// The daemon is not the vdev's child, so its pid alone does not pin it: a pidfd taken first stays on the process the
    /// pid named then, and once the namespace is open, the process must still run (the pidfd does not poll readable) and
    /// its namespace must be another than the vdev's, with the share's maps. Reading <c>/proc/PID/ns/user</c> of a daemon
    /// whose ids outside are not the vdev's is allowed because the vdev owns the daemon's namespace, which gives it every
    /// capability there, CAP_SYS_PTRACE included.
    /// </remarks>
    public static SafeFd Open(int pid, ShareSettings share)
    {
        int pidFd = Libc.pidfd_open(pid, 0);
        if (pidFd < 0) throw Failed(share, pid, $"pidfd_open failed with {Libc.Describe(Libc.LastErrno)}");
        using var process = new SafeFd(pidFd);
        int fd = Libc.open($"/proc/{pid}/ns/user", Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (fd < 0) throw Failed(share, pid, $"opening /proc/{pid}/ns/user failed with {Libc.Describe(Libc.LastErrno)}");
        var ns = new SafeFd(fd);
        try
        {
            // Every namespace is an inode of the one nsfs: the inode number tells two apart.
            if (Libc.statx(ns, "\0"u8, Libc.AT_EMPTY_PATH, Libc.STATX_INO, out var kept) != 0
                || Libc.statx(Libc.AT_FDCWD, "/proc/self/ns/user", 0, Libc.STATX_INO, out var own) != 0)
                throw Failed(share, pid, $"statx of a user namespace failed with {Libc.Describe(Libc.LastErrno)}");
            if (kept.Ino == own.Ino) throw Failed(share, pid, "the daemon is in the vdev's own user namespace");
            CheckMap(share, pid, "uid", share.UidMap);
            CheckMap(share, pid, "gid", share.GidMap);
            Span<PollFd> fds = [new PollFd { Fd = process.Value, Events = Libc.POLLIN }];
            if (Libc.poll(fds, 1, 0) != 0) throw Failed(share, pid, "the daemon exited meanwhile");
            return ns;
        }
        catch
        {
            ns.Dispose();
            throw;
        }
    }

    private static void CheckMap(ShareSettings share, int pid, string kind, string given)
    {
        if (!ShareVocabulary.TryParseNamespaceMap(given, out var map)) return;
        string actual;
        try { actual = File.ReadAllText($"/proc/{pid}/{kind}_map"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw Failed(share, pid, $"/proc/{pid}/{kind}_map cannot be read ({e.Message})"); }
        var fields = actual.Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries);
        if (fields.Length != 3 || Number(fields[0]) != map.Inside || Number(fields[1]) != map.Outside || Number(fields[2]) != map.Count)
            throw Failed(share, pid, $"its namespace maps {kind}s '{actual.Trim()}', not --{kind}-map {given}");
    }

    private static uint? Number(string text) =>
        uint.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var n) ? n : null;

    private static ShareStartException Failed(ShareSettings share, int pid, string why) =>
        new($"share '{share.Tag}': the user namespace of daemon {pid} cannot be kept for the daemons that replace it ({why}); without it a relaunch could not map --uid-map/--gid-map again once the vdev has NoNewPrivs. Check that /proc is mounted without hidepid restrictions for the vdev's user.");
}
