using System.Text.Json;

namespace Hypervisor.Passthrough.Tests.Mount;

/// <summary>
/// One mounted share (with <c>--xattr</c>) for the whole differential test class: the script runs once per uid on
/// the mount and once on the local twin, lazily, and each case is then compared by its own test. Every case works
/// in its own subdirectory, so the cases do not depend on each other or on the order the tests run in.
/// </summary>
public sealed class DifferentialShare : IDisposable
{
    private readonly Lazy<MountedShare> _share = new(() => MountedShare.Start("--xattr"));
    private readonly Dictionary<int, Lazy<(Dictionary<string, JsonElement> Local, Dictionary<string, JsonElement> Mount)>> _runs = new();

    public DifferentialShare()
    {
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
    }
}
