using Hypervisor.Protocol.Share;

namespace Hypervisor.Launcher;

/// <summary>
/// One share's validated launch settings: the share's own (passed on to the daemon in the common vocabulary) and
/// the launcher's. Paths are absolute (the daemon starts in "/").
/// </summary>
public sealed record LaunchSettings
{
    /// <summary>The share's settings, as the daemon gets them (shared directory and control socket absolute).</summary>
    public required ShareSettings Share { get; init; }

    /// <summary>The share's tag.</summary>
    public string Tag => Share.Tag;

    /// <summary><c>--mount DIR</c> (absolute; checked by the daemon, which reports its own reason), or null.</summary>
    public string? MountPoint { get; init; }

    /// <summary><c>--ring SPEC</c>, forwarded untouched, or null.</summary>
    public string? Ring { get; init; }

    /// <summary>Descriptors the daemon inherits under the same numbers: the ring's and every <c>--inherit-fd</c>; sorted, distinct, all ≥ 3.</summary>
    public IReadOnlyList<int> InheritedFds { get; init; } = [];

    /// <summary>
    /// <c>--log-file FILE</c> (absolute): the daemon's stdout and stderr are appended to it for the daemon's whole
    /// life; null: they are captured while it starts, copied to the launcher's stderr and discarded afterwards.
    /// </summary>
    public string? LogFile { get; init; }

    /// <summary>The daemon executable (an apphost) or assembly (.dll), absolute.</summary>
    public required string Passthrough { get; init; }

    /// <summary>The dotnet host that runs <see cref="Passthrough"/> when it is a .dll; null for an apphost.</summary>
    public string? DotnetHost { get; init; }

    /// <summary>The control socket fuse_launcher bound for a daemon in a user namespace, passed as <c>--control-fd</c> (it is also in <see cref="InheritedFds"/>); null: the daemon binds it.</summary>
    public int? ControlFd { get; init; }

    /// <summary>
    /// <c>--user-namespace-fd N</c>: the user namespace the daemon joins (not root, <c>--sandbox namespace</c>), kept
    /// open by the caller; not one of <see cref="InheritedFds"/>, since the daemon does not keep it. Null: a new one is made.
    /// </summary>
    public int? UserNamespaceFd { get; init; }

    /// <summary>How long the daemon may take to report ready (default 10 s).</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// The daemon's argv (argv[0] first): the share options in the daemon's vocabulary, plus
    /// <c>--ready-fd <paramref name="readyFd"/></c>.
    /// </summary>
    public IReadOnlyList<string> DaemonArguments(int readyFd)
    {
        var args = new List<string>();
        if (DotnetHost is not null) args.Add(DotnetHost);
        args.Add(Passthrough);
        args.AddRange(ShareVocabulary.ToArguments(Share));
        if (MountPoint is not null) { args.Add("--mount"); args.Add(MountPoint); }
        if (Ring is not null) { args.Add("--ring"); args.Add(Ring); }
        if (ControlFd is int controlFd) { args.Add("--control-fd"); args.Add(controlFd.ToString(System.Globalization.CultureInfo.InvariantCulture)); }
        args.Add("--ready-fd"); args.Add(readyFd.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return args;
    }

    /// <summary>The descriptor number the daemon gets its ready pipe on: the lowest ≥ 3 that no inherited fd uses.</summary>
    public int ReadyFdNumber()
    {
        int fd = 3;
        foreach (var inherited in InheritedFds)
        {
            if (inherited == fd) fd++;
            else if (inherited > fd) break;
        }
        return fd;
    }
}
