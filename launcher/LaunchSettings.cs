using Hypervisor.Protocol.Share;

namespace Hypervisor.Launcher;

/// <summary>
/// One share's validated launch settings. Paths are absolute (the daemon starts in "/"); options left null
/// were not given and are not forwarded, so the daemon's own defaults apply.
/// </summary>
public sealed record LaunchSettings
{
    /// <summary>The shared host directory (absolute).</summary>
    public required string SharedDir { get; init; }

    /// <summary>The virtio-fs tag (default "hostshare", as the daemon's).</summary>
    public string Tag { get; init; } = "hostshare";

    /// <summary><c>--cache</c> as given (validated), or null for the daemon's default (auto).</summary>
    public string? Cache { get; init; }

    /// <summary><c>--allow-direct-io</c>.</summary>
    public bool AllowDirectIo { get; init; }

    /// <summary><c>--direct-io</c>.</summary>
    public bool DirectIo { get; init; }

    /// <summary><c>--xattr</c>.</summary>
    public bool XAttr { get; init; }

    /// <summary><c>--readonly</c>.</summary>
    public bool ReadOnly { get; init; }

    /// <summary><c>--writeback</c>.</summary>
    public bool Writeback { get; init; }

    /// <summary><c>--thread-pool-size</c> (0..1024), or null.</summary>
    public int? ThreadPoolSize { get; init; }

    /// <summary><c>--fd-cache-size</c> (16..1048576), or null.</summary>
    public int? FdCacheSize { get; init; }

    /// <summary><c>--queue-cpus</c> (CPUs this process may run on), or null.</summary>
    public QueueCpus? QueueCpus { get; init; }

    /// <summary><c>--log-level</c> (validated), or null.</summary>
    public string? LogLevel { get; init; }

    /// <summary><c>--mount DIR</c> (absolute; checked by the daemon, which reports its own reason), or null.</summary>
    public string? MountPoint { get; init; }

    /// <summary><c>--ring SPEC</c>, forwarded untouched, or null.</summary>
    public string? Ring { get; init; }

    /// <summary><c>--control-socket PATH</c> (absolute), or null.</summary>
    public string? ControlSocket { get; init; }

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

    /// <summary>How long the daemon may take to report ready (default 10 s).</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// The daemon's argv (argv[0] first): the share options in the daemon's vocabulary, plus
    /// <c>--ready-fd <paramref name="readyFd"/></c>.
    /// </summary>
    public IReadOnlyList<string> DaemonArguments(int readyFd)
    {
        var args = new List<string>();
        if (DotnetHost is not null) { args.Add(DotnetHost); args.Add(Passthrough); }
        else args.Add(Passthrough);
        args.Add("--shared-dir"); args.Add(SharedDir);
        args.Add("--tag"); args.Add(Tag);
        if (Cache is not null) { args.Add("--cache"); args.Add(Cache); }
        if (AllowDirectIo) args.Add("--allow-direct-io");
        if (DirectIo) args.Add("--direct-io");
        if (XAttr) args.Add("--xattr");
        if (ReadOnly) args.Add("--readonly");
        if (Writeback) args.Add("--writeback");
        if (ThreadPoolSize is { } threads) { args.Add("--thread-pool-size"); args.Add(threads.ToString(System.Globalization.CultureInfo.InvariantCulture)); }
        if (FdCacheSize is { } fdCache) { args.Add("--fd-cache-size"); args.Add(fdCache.ToString(System.Globalization.CultureInfo.InvariantCulture)); }
        if (LogLevel is not null) { args.Add("--log-level"); args.Add(LogLevel); }
        if (MountPoint is not null) { args.Add("--mount"); args.Add(MountPoint); }
        if (Ring is not null) { args.Add("--ring"); args.Add(Ring); }
        if (QueueCpus is not null) { args.Add("--queue-cpus"); args.Add(QueueCpus.ToString()); }
        if (ControlSocket is not null) { args.Add("--control-socket"); args.Add(ControlSocket); }
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
