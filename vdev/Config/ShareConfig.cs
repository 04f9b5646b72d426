namespace Hypervisor.Vdev.Config;

/// <summary>One shared directory served as one virtio-fs device: everything the vdev, the launcher and the daemon need.</summary>
public sealed record ShareConfig
{
    /// <summary>Host directory to share (QNX <c>host_path</c>, virtiofsd <c>--shared-dir</c>).</summary>
    public required string HostPath { get; init; }

    /// <summary>Mount tag the guest uses (<c>tag</c>), at most 36 bytes of UTF-8.</summary>
    public required string Tag { get; init; }

    /// <summary>vhost-user socket path the VMM connects to (<c>socket</c>, <c>--socket-path</c>); null when <see cref="ListenFd"/> is set.</summary>
    public string? SocketPath { get; init; }

    /// <summary>An inherited listening socket (libvirt's <c>--fd</c>).</summary>
    public int? ListenFd { get; init; }

    /// <summary>FOPEN_DIRECT_IO on every open (QNX <c>directio</c>); default off; switchable at run time.</summary>
    public bool DirectIo { get; init; }

    /// <summary>Honour the guest's O_DIRECT (virtiofsd <c>--allow-direct-io</c>); default off.</summary>
    public bool AllowDirectIo { get; init; }

    /// <summary>Request queues (QNX <c>num_req_queues</c>); default 1, at most 16.</summary>
    public int RequestQueues { get; init; } = 1;

    /// <summary>
    /// The host CPU of each request queue (<c>queue_cpus</c>, <c>--queue-cpus</c>): the vdev's worker and the daemon's
    /// dispatcher of request queue i both run on the i-th; default null: the scheduler places them.
    /// </summary>
    public Hypervisor.Protocol.Share.QueueCpus? QueueCpus { get; init; }

    /// <summary>Entries per virtqueue (<c>queue_size</c>); default 1024 (a power of two, at most 32768).</summary>
    public int QueueSize { get; init; } = 1024;

    /// <summary>Cache policy: never | metadata | auto | always; default auto.</summary>
    public string Cache { get; init; } = "auto";

    /// <summary>Read-only share; default off.</summary>
    public bool ReadOnly { get; init; }

    /// <summary>Extended attributes; default off.</summary>
    public bool XAttr { get; init; }

    /// <summary>Writeback caching in the guest; default off.</summary>
    public bool Writeback { get; init; }

    /// <summary>Daemon worker threads; default 0 (automatic).</summary>
    public int ThreadPoolSize { get; init; }

    /// <summary>O_PATH descriptors the daemon keeps for known inodes (16 to 1048576); default null: derived by the
    /// daemon from its RLIMIT_NOFILE.</summary>
    public int? FdCacheSize { get; init; }

    /// <summary>
    /// gRPC control socket of the share's daemon; default: the vhost-user socket path + ".ctl" (with <c>--fd</c>,
    /// the path the inherited socket is bound to + ".ctl"), or /run/vdev/TAG.ctl when there is no path.
    /// </summary>
    public string? ControlSocket { get; init; }

    /// <summary>Paths (relative to the share) the guest may reach; empty = the allowlist is off.</summary>
    public IReadOnlyList<string> Allow { get; init; } = [];

    /// <summary>Log level of the share's daemon; default info.</summary>
    public string LogLevel { get; init; } = "info";

    /// <summary>Where this share was declared (file:line), for messages.</summary>
    public string Origin { get; init; } = "command line";

    /// <summary>The control socket actually used.</summary>
    public string EffectiveControlSocket =>
        ControlSocket ?? (SocketPath is not null ? SocketPath + ".ctl" : Path.Combine("/run/vdev", Tag + ".ctl"));
}
