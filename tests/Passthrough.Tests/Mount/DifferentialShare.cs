using System.Text.Json;

namespace Hypervisor.Passthrough.Tests.Mount;

/// <summary>
/// One mounted share (default options plus <c>--xattr</c> and <c>--allow-dev</c>, since the plain directory it is
/// compared with is not nodev; MountPrivilegeTests covers the nodev default) for a whole differential test class: the script runs once
/// per uid on the mount and once on the local twin, lazily, and each case is then compared by its own test. Every case
/// works in its own subdirectory, so the cases do not depend on each other or on the order the tests run in.
/// </summary>
public class DifferentialShare : IDisposable
{
    private readonly Lazy<MountedShare> _share;
    private readonly Dictionary<int, Lazy<(Dictionary<string, JsonElement> Local, Dictionary<string, JsonElement> Mount)>> _runs = new();

    public DifferentialShare() : this("--xattr")
    {
    }

    /// <summary>A share started with <paramref name="daemonArgs"/>.</summary>
    protected DifferentialShare(params string[] daemonArgs)
    {
        _share = new(() => MountedShare.Start([.. daemonArgs, "--allow-dev"]));
        foreach (var uid in new[] { 0, 1000 })
        {
            _runs[uid] = new(() =>
            {
                var share = _share.Value;
                var name = uid == 0 ? "root" : $"uid{uid}";
                var local = Task.Run(() => FsOpsScript.RunAll(Path.Combine(share.LocalDir, name), uid));
                var mount = Task.Run(() => FsOpsScript.RunAll(Path.Combine(share.MountPoint, name), uid));
                return (local.GetAwaiter().GetResult(), mount.GetAwaiter().GetResult());
            });
        }
    }

    public MountedShare Share => _share.Value;

    /// <summary>The logs of every case as <paramref name="uid"/>: on the local directory and on the mount.</summary>
    public (Dictionary<string, JsonElement> Local, Dictionary<string, JsonElement> Mount) Results(int uid) => _runs[uid].Value;

    public void Dispose()
    {
        if (_share.IsValueCreated) _share.Value.Dispose();
        GC.SuppressFinalize(this);
    }
}

/// <summary>The share with <c>--writeback</c>: the kernel caches writes and sends them later.</summary>
public sealed class WritebackDifferentialShare() : DifferentialShare("--xattr", "--writeback");

/// <summary>The share with <c>--cache never</c>: no attribute or entry caching, direct I/O on every open.</summary>
public sealed class UncachedDifferentialShare() : DifferentialShare("--xattr", "--cache", "never");

/// <summary>The share with <c>--cache always</c>: everything cached for long (KEEP_CACHE, CACHE_DIR).</summary>
public sealed class AlwaysCachedDifferentialShare() : DifferentialShare("--xattr", "--cache", "always");
