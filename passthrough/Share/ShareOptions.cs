namespace Hypervisor.Passthrough.Share;

/// <summary>virtiofsd's <c>--cache</c> policies.</summary>
public enum CachePolicy
{
    /// <summary>No caching: entry/attribute timeouts 0 and direct I/O on every open.</summary>
    Never,
    /// <summary>Metadata cached for a long time, file data not cached (direct I/O).</summary>
    Metadata,
    /// <summary>Default: metadata valid for one second, data cached until the file is reopened and found changed.</summary>
    Auto,
    /// <summary>Metadata and data cached for a long time (KEEP_CACHE, CACHE_DIR): the host must not change the share behind the guest.</summary>
    Always,
}

/// <summary>The settings a share starts with (command line of passthrough / fuse_launcher).</summary>
public sealed record ShareOptions
{
    /// <summary>The host directory served (<c>--shared-dir</c> / <c>-o source=</c>). Required.</summary>
    public required string SharedDir { get; init; }

    /// <summary>The mount tag the guest uses (<c>--tag</c>); informational for the daemon. Default "hostshare".</summary>
    public string Tag { get; init; } = "hostshare";

    /// <summary><c>--cache</c>; default auto.</summary>
    public CachePolicy Cache { get; init; } = CachePolicy.Auto;

    /// <summary><c>--allow-direct-io</c>: honour O_DIRECT of the guest's opens with FOPEN_DIRECT_IO; default off (O_DIRECT is dropped, as virtiofsd does).</summary>
    public bool AllowDirectIo { get; init; }

    /// <summary><c>--direct-io</c> (QNX <c>directio</c>): FOPEN_DIRECT_IO on every open; default off. Switchable at run time.</summary>
    public bool DirectIo { get; init; }

    /// <summary><c>--xattr</c>: serve extended attributes; default off (ENOSYS/EOPNOTSUPP to the guest, as virtiofsd).</summary>
    public bool XAttr { get; init; }

    /// <summary><c>--readonly</c>: every modifying request gets EROFS; default off.</summary>
    public bool ReadOnly { get; init; }

    /// <summary><c>--writeback</c>: negotiate FUSE_WRITEBACK_CACHE; default off.</summary>
    public bool Writeback { get; init; }

    /// <summary><c>--thread-pool-size</c>: worker threads serving /dev/fuse; default 0 = two per CPU, at least 8.</summary>
    public int ThreadPoolSize { get; init; }

    /// <summary>
    /// <c>--fd-cache-size</c>: O_PATH descriptors the daemon keeps for inodes it identifies by file handle; default
    /// null = derived from RLIMIT_NOFILE (see <c>DescriptorBudget.AutomaticCacheSize</c>: 15,904 under a limit of
    /// 20,000, at most 65,536).
    /// </summary>
    public int? FdCacheSize { get; init; }
}

/// <summary>
/// The settings of a share that operators may change while it serves (over gRPC). Reads are lock-free; every
/// change applies to requests from then on.
/// </summary>
public sealed class ShareSettings
{
    private volatile bool _directIo;
    private volatile CachePolicy _cache;
    private volatile Allowlist? _allowlist;

    /// <summary>Starts from the command-line options.</summary>
    public ShareSettings(ShareOptions options)
    {
        Options = options;
        _directIo = options.DirectIo;
        _cache = options.Cache;
    }

    /// <summary>The start-up options (immutable).</summary>
    public ShareOptions Options { get; }

    /// <summary>FOPEN_DIRECT_IO on every open from now on.</summary>
    public bool DirectIo { get => _directIo; set => _directIo = value; }

    /// <summary>The cache policy applied to replies from now on.</summary>
    public CachePolicy Cache { get => _cache; set => _cache = value; }

    /// <summary>The path allowlist, or null when it is disabled (everything in the share is visible).</summary>
    public Allowlist? Allowlist { get => _allowlist; set => _allowlist = value; }
}

/// <summary>
/// An immutable set of share-relative paths the guest may reach (crosvm's dynamic allowlist): a path is visible
/// when it is an allowed path, lies below one, or is an ancestor directory of one (so the guest can walk to it).
/// Replaced as a whole on every change, so readers never lock.
/// </summary>
public sealed class Allowlist
{
    private readonly string[] _paths;

    /// <summary>Builds from normalised relative paths ("a/b", no leading '/', no '.' or '..').</summary>
    public Allowlist(IEnumerable<string> paths) => _paths = paths.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray();

    /// <summary>The allowed paths, sorted.</summary>
    public IReadOnlyList<string> Paths => _paths;

    /// <summary>Whether the share-relative path (bytes, '/'-separated, "" for the root) may be reached.</summary>
    public bool Permits(ReadOnlySpan<char> relative)
    {
        if (relative.IsEmpty) return true;
        foreach (var allowed in _paths)
        {
            if (IsSameOrBelow(relative, allowed) || IsSameOrBelow(allowed, relative)) return true;
        }
        return false;
    }

    private static bool IsSameOrBelow(ReadOnlySpan<char> path, ReadOnlySpan<char> root) =>
        path.StartsWith(root, StringComparison.Ordinal) && (path.Length == root.Length || path[root.Length] == '/');
}
