using Hypervisor.Interop;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough.FileSystem;

/// <summary>
/// Runs a creating operation as the calling guest user: the thread's fsuid/fsgid are switched (setfsuid and
/// setfsgid are per thread) and restored on dispose. With a non-root fsuid the kernel also drops the thread's
/// filesystem capabilities, so permission checks, setgid-directory inheritance and CAP_MKNOD behave as for that
/// user on a local filesystem. With a supplementary group (FUSE_CREATE_SUPP_GROUP), the thread's supplementary
/// groups become that one group for the call and are restored after it, through the raw setgroups syscall, which
/// changes the calling thread only (glibc's setgroups(3) would change every thread of the daemon).
/// </summary>
/// <remarks>
/// setfsuid(2) and setfsgid(2) report no failure, so the restore is checked by reading the ids back. A restore that did
/// not take leaves this thread with the guest user's fsuid/fsgid, which later requests that do not switch (those of the
/// guest's root) would then run with: it is logged as an error, as virtiofsd does.
/// </remarks>
internal readonly struct Credentials : IDisposable
{
    /// <summary>The most supplementary groups of the daemon's own a thread saves and restores around a group switch.</summary>
    private const int MaxSavedGroups = 64;

    [ThreadStatic] private static bool t_privateUmask;
    [ThreadStatic] private static uint[]? t_savedGroups;
    [ThreadStatic] private static int t_savedGroupCount;
    [ThreadStatic] private static bool t_ownFs;
    [ThreadStatic] private static uint t_umask;

    private readonly bool _active;
    private readonly bool _groupsSet;
    private readonly uint _oldUid;
    private readonly uint _oldGid;
    private readonly ILogger? _logger;

    private Credentials(uint oldUid, uint oldGid, bool groupsSet, ILogger logger)
    {
        _active = true;
        _groupsSet = groupsSet;
        _oldUid = oldUid;
        _oldGid = oldGid;
        _logger = logger;
    }

    /// <summary>
    /// Switches when the daemon can (it is root) and the caller differs from the daemon; <paramref name="suppGid"/>
    /// (a host gid, or <see cref="Engine.FuseContext.NoGroup"/>) becomes the thread's one supplementary group.
    /// </summary>
    public static Credentials Enter(bool enabled, uint uid, uint gid, uint suppGid, ILogger logger)
    {
        EnsurePrivateUmask();
        if (!enabled) return default;
        var groupsSet = suppGid != Engine.FuseContext.NoGroup && SetGroup(suppGid, logger);
        var oldGid = (uint)Libc.setfsgid(gid);
        var oldUid = (uint)Libc.setfsuid(uid);
        return new Credentials(oldUid, oldGid, groupsSet, logger);
    }

    public void Dispose()
    {
        if (!_active) return;
        bool uidRestored = Libc.SetFsUid(_oldUid);
        bool gidRestored = Libc.SetFsGid(_oldGid);
        if (!uidRestored || !gidRestored)
            Log.CredentialsNotRestored(_logger!, _oldUid, _oldGid, (uint)Libc.setfsuid(uint.MaxValue), (uint)Libc.setfsgid(uint.MaxValue));
        if (_groupsSet && Libc.SetThreadGroups(t_savedGroups.AsSpan(0, t_savedGroupCount)) != 0)
            Log.GroupsNotRestored(_logger!, Libc.LastErrno);
    }

    /// <summary>Saves this thread's supplementary groups and sets <paramref name="gid"/> as the only one; false when it could not.</summary>
    private static bool SetGroup(uint gid, ILogger logger)
    {
        var saved = t_savedGroups ??= new uint[MaxSavedGroups];
        var count = Libc.GetThreadGroups(saved);
        if (count < 0)
        {
            Log.GroupNotSet(logger, gid, Libc.LastErrno);
            return false;
        }
        t_savedGroupCount = count;
        ReadOnlySpan<uint> one = [gid];
        if (Libc.SetThreadGroups(one) == 0) return true;
        Log.GroupNotSet(logger, gid, Libc.LastErrno);
        return false;
    }

    /// <summary>
    /// Gives this thread its own fs_struct with umask 0, once: without DONT_MASK the guest kernel has already applied
    /// the caller's umask to the mode it sends, so the daemon's must not apply again (with DONT_MASK, see
    /// <see cref="UseUmask"/>). If the unshare fails the process umask stays in force (modes may come out narrower,
    /// never wider).
    /// </summary>
    private static void EnsurePrivateUmask()
    {
        if (t_privateUmask) return;
        t_privateUmask = true;
        if (Libc.unshare(Libc.CLONE_FS) != 0) return;
        _ = Libc.umask(0); // umask(2) returns the previous mask and cannot fail
        t_ownFs = true;
    }

    /// <summary>
    /// Makes <paramref name="mask"/> this thread's umask for the creating call that follows (with FUSE_DONT_MASK the
    /// guest leaves the umask to the daemon, and the host kernel applies it only where the parent has no default ACL,
    /// which is what POSIX ACLs require). The umask belongs to the thread's own fs_struct, so no other request sees it.
    /// False when this thread shares the process's fs_struct (the unshare failed): the caller then applies the mask itself.
    /// </summary>
    public static bool UseUmask(uint mask)
    {
        EnsurePrivateUmask();
        if (!t_ownFs) return mask == 0;
        if (t_umask != mask)
        {
            _ = Libc.umask(mask);
            t_umask = mask;
        }
        return true;
    }
}
