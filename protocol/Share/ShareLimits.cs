namespace Hypervisor.Protocol.Share;

/// <summary>
/// The ranges of a share's numeric settings, in one place for every process that takes them: the vdev (command line
/// and VM configuration), fuse_launcher and the passthrough daemon. Each checks a value before it passes it on, so a
/// mistake is reported by the first process that reads it, in that process's words.
/// </summary>
public static class ShareLimits
{
    /// <summary>The most worker threads <c>--thread-pool-size</c> / <c>thread_pool_size</c> accepts (0: automatic).</summary>
    public const int MaxThreadPoolSize = 1024;

    /// <summary>The smallest fd cache <c>--fd-cache-size</c> / <c>fd_cache_size</c> accepts.</summary>
    public const int MinFdCacheSize = 16;

    /// <summary>The largest fd cache accepted at all; below it, the daemon's descriptor limit decides.</summary>
    public const int MaxFdCacheSize = 1 << 20;
}
