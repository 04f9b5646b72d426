using Hypervisor.Interop;
using Hypervisor.Protocol.Share;

namespace Hypervisor.Vdev.Share;

/// <summary>
/// What the vdev gives up. At start-up, before it starts any thread of its own: every capability except those the
/// processes it starts need (fuse_launcher creates namespaces; a daemon mounts its /proc, pivots or chroots, raises
/// its descriptor limit, drops its bounding set, and keeps its own set with each share's <c>--modcaps</c>), and
/// NoNewPrivs, on every thread (not root and with <c>--uid-map</c>/<c>--gid-map</c>, NoNewPrivs waits for the
/// filter: newuidmap must still work for fuse_launcher while it starts the first daemons). Once its shares are started:
/// a seccomp filter for every thread, with the most permissive of its shares' <c>--seccomp</c> actions. Since a filter
/// is inherited across exec, it also allows what fuse_launcher and a daemon call; each daemon then stacks its own,
/// narrower one. Not root and with id maps, the filter also allows what nsenter calls to join the share's kept user
/// namespace for a later daemon (<see cref="ShareUserNamespace"/>): setns, setgid and setuid.
/// </summary>
internal sealed class VdevConfinement : IDisposable
{
    /// <summary>What fuse_launcher and a daemon need beyond the daemon's own set while they build the sandbox.</summary>
    private static readonly string[] ForStartingDaemons = ["sys_admin", "sys_chroot", "setpcap", "sys_resource"];

    private SeccompFilter? _filter;
    private bool _noNewPrivsDeferred;

    private VdevConfinement(SeccompFilter? filter, bool noNewPrivsDeferred)
    {
        _filter = filter;
        _noNewPrivsDeferred = noNewPrivsDeferred;
    }

    /// <summary>The capabilities the vdev keeps for <paramref name="shares"/>.</summary>
    public static ulong Keep(IEnumerable<ShareSettings> shares)
    {
        ulong keep = Capabilities.DaemonDefault;
        foreach (var name in ForStartingDaemons)
        {
            if (Capabilities.TryParse(name, out var bit)) keep |= bit;
        }
        foreach (var share in shares)
        {
            if (Capabilities.TryModify(Capabilities.DaemonDefault, share.Modcaps, out var set, out _)) keep |= set;
        }
        return keep;
    }

    /// <summary>
    /// Drops capabilities and sets NoNewPrivs; compiles the filter. Throws <see cref="InvalidOperationException"/> or
    /// <see cref="SeccompException"/> with a sentence.
    /// </summary>
    public static VdevConfinement Enter(IReadOnlyList<ShareSettings> shares)
    {
        var threads = ThreadConfinement.ThreadIds();
        bool root = Libc.geteuid() == 0;
        // Not root, an id range of a share's user namespace is written by newuidmap/newgidmap, set-user-ID programs that
        // NoNewPrivs would disarm: it is then set once the shares are started, with the filter.
        bool defer = !root && shares.Any(s => s.UidMap.Length > 0 || s.GidMap.Length > 0);
        var problem = root ? ThreadConfinement.Drop(Keep(shares), threads) : defer ? null : ThreadConfinement.NoNewPrivs();
        if (problem is not null) throw new InvalidOperationException($"giving up capabilities failed: {problem}.");
        var action = shares.Select(s => s.Seccomp).DefaultIfEmpty(SeccompAction.Kill).Max();
        if (action == SeccompAction.None) return new VdevConfinement(null, defer);
        string[] joining = defer ? SyscallAllowlist.JoinUserNamespace : [];
        return new VdevConfinement(SeccompFilter.Compile(action, [.. SyscallAllowlist.Names, .. SyscallAllowlist.DevFuse, .. SyscallAllowlist.Vdev, .. joining]), defer);
    }

    /// <summary>Loads the filter (once the shares are started). Throws <see cref="SeccompException"/>.</summary>
    public void LoadFilter()
    {
        // libseccomp sets NoNewPrivs before it loads, and TSYNC gives it to every thread with the filter.
        if (_filter is null && _noNewPrivsDeferred && ThreadConfinement.NoNewPrivs() is { } problem)
            throw new InvalidOperationException($"setting NoNewPrivs failed: {problem}.");
        _noNewPrivsDeferred = false;
        _filter?.Load();
        _filter = null;
    }

    public void Dispose() => _filter?.Dispose();
}
