using System.Text;
using Hypervisor.Protocol.Share;

namespace Hypervisor.Passthrough.Share;

/// <summary>
/// The settings of a share that operators may change while it serves (over gRPC). Reads are lock-free; every
/// change applies to requests from then on.
/// </summary>
public sealed class LiveSettings
{
    private volatile bool _directIo;
    private volatile CachePolicy _cache;
    private volatile Allowlist? _allowlist;

    /// <summary>Starts from the share's settings; an allowlist in them is enforced from the start.</summary>
    public LiveSettings(ShareSettings options)
    {
        Options = options;
        _directIo = options.DirectIo;
        _cache = options.Cache == CachePolicy.Unspecified ? CachePolicy.Auto : options.Cache;
        if (options.Allow.Count > 0) _allowlist = new Allowlist(options.Allow);
    }

    /// <summary>The start-up settings; not changed after start (the live values are the properties here).</summary>
    public ShareSettings Options { get; }

    /// <summary>FOPEN_DIRECT_IO on every open from now on.</summary>
    public bool DirectIo { get => _directIo; set => _directIo = value; }

    /// <summary>The cache policy applied to replies from now on.</summary>
    public CachePolicy Cache { get => _cache; set => _cache = value; }

    /// <summary>The path allowlist, or null when it is disabled (everything in the share is visible).</summary>
    public Allowlist? Allowlist { get => _allowlist; set => _allowlist = value; }
}

/// <summary>How far the allowlist lets the guest into a share-relative path.</summary>
public enum AllowlistReach
{
    /// <summary>Neither an allowed path, below one, nor on the way to one.</summary>
    Hidden,
    /// <summary>A strict ancestor of an allowed path (the share root among them): visible so the guest can walk down.</summary>
    PathOnly,
    /// <summary>An allowed path or below one.</summary>
    Inside,
}

/// <summary>
/// An immutable set of share-relative paths the guest may reach (crosvm's dynamic allowlist): a path is visible
/// when it is an allowed path, lies below one, or is an ancestor directory of one (so the guest can walk to it).
/// Replaced as a whole on every change, so readers never lock. Paths are compared as UTF-8 bytes, as the
/// filesystem reads them from /proc/self/fd, so a check allocates nothing.
/// </summary>
public sealed class Allowlist
{
    private readonly string[] _paths;
    private readonly byte[][] _utf8;

    /// <summary>Builds from normalised relative paths ("a/b", no leading '/', no '.' or '..').</summary>
    public Allowlist(IEnumerable<string> paths)
    {
        _paths = paths.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray();
        _utf8 = Array.ConvertAll(_paths, Encoding.UTF8.GetBytes);
    }

    /// <summary>The allowed paths, sorted.</summary>
    public IReadOnlyList<string> Paths => _paths;

    /// <summary>Whether the share-relative path (UTF-8, '/'-separated, empty for the root) may be reached.</summary>
    public bool Permits(ReadOnlySpan<byte> relative) => Classify(relative) != AllowlistReach.Hidden;

    /// <summary>How far the share-relative path (UTF-8, '/'-separated, empty for the root) may be reached.</summary>
    public AllowlistReach Classify(ReadOnlySpan<byte> relative)
    {
        var reach = AllowlistReach.Hidden;
        foreach (var allowed in _utf8)
        {
            if (IsSameOrBelow(relative, allowed)) return AllowlistReach.Inside;
            if (relative.IsEmpty || IsSameOrBelow(allowed, relative)) reach = AllowlistReach.PathOnly;
        }
        return reach;
    }

    private static bool IsSameOrBelow(ReadOnlySpan<byte> path, ReadOnlySpan<byte> root) =>
        !root.IsEmpty && path.StartsWith(root) && (path.Length == root.Length || path[root.Length] == (byte)'/');
}
