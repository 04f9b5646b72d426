using Hypervisor.Interop;
using Hypervisor.Protocol.Share;

namespace Hypervisor.Passthrough.FileSystem;

/// <summary>
/// How many O_PATH descriptors the fd cache may keep, given the process's descriptor limit. The cache is what lets
/// the daemon answer a guest that re-reads a large directory from one <c>fstatat</c> per entry instead of an open
/// and a close; the rest of the limit is left for the guest's open files, directories, locks and the daemon's own
/// descriptors. The reserve is not a hard partition: an open that hits EMFILE makes the cache close some of its
/// descriptors and is tried again (<see cref="PassthroughFileSystem"/>).
/// </summary>
internal static class DescriptorBudget
{
    /// <summary>The largest automatic size: each cached descriptor pins a host inode and dentry (about 1 KiB of
    /// kernel memory) after the guest has forgotten it.</summary>
    public const int MaxAutomaticCacheSize = 65536;

    /// <summary>Descriptors kept free of the cache at most, for open files and the daemon's own use.</summary>
    public const int MaxReserve = 4096;

    /// <summary>Descriptors kept free of the cache at least.</summary>
    public const int MinReserve = 256;

    /// <summary>The soft RLIMIT_NOFILE (the .NET runtime raises it to the hard limit at start-up).</summary>
    public static long SoftLimit()
    {
        if (Libc.getrlimit(Libc.RLIMIT_NOFILE, out var limit) != 0) return 1024;
        return limit.Current > int.MaxValue ? int.MaxValue : (long)limit.Current;
    }

    /// <summary>
    /// The automatic cache size for a soft limit: the limit less a quarter of it (at least 256, at most 4096
    /// descriptors), no more than <see cref="MaxAutomaticCacheSize"/> and no less than <see cref="ShareVocabulary.MinFdCacheSize"/>.
    /// 1024 gives 768, 20,000 gives 15,904, 524,288 gives 65,536.
    /// </summary>
    public static int AutomaticCacheSize(long softLimit) =>
        (int)Math.Clamp(softLimit - Reserve(softLimit), ShareVocabulary.MinFdCacheSize, MaxAutomaticCacheSize);

    /// <summary>The largest cache an operator may ask for under <paramref name="softLimit"/>.</summary>
    public static int LargestCacheSize(long softLimit) =>
        (int)Math.Clamp(softLimit - MinReserve, ShareVocabulary.MinFdCacheSize, ShareVocabulary.MaxFdCacheSize);

    private static long Reserve(long softLimit) => Math.Clamp(softLimit / 4, MinReserve, MaxReserve);
}
