using Hypervisor.Interop;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Passthrough.FileSystem;
using Hypervisor.Passthrough.Share;
using Hypervisor.Protocol.Fuse;
using Hypervisor.Protocol.Recovery;
using Hypervisor.Protocol.Share;
using Microsoft.Extensions.Logging.Abstractions;

namespace Hypervisor.Passthrough.Tests.FileSystem;

/// <summary>
/// A daemon taking the guest's session over from the state store (passthrough/FileSystem/README.md, "Surviving a
/// crash"): the same node ids, and a LOOKUP the vdev sends again after the crash counted once.
/// </summary>
public sealed class PassthroughFileSystemRecoveryTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pt-recovery-").FullName;
    private readonly StateStore _store = StateStore.Create(nodes: 64, handles: 16);

    private PassthroughFileSystem Daemon(out PassthroughFileSystem.Restored? restored)
    {
        var options = ShareVocabulary.Defaults();
        options.SharedDir = _dir;
        var fs = new PassthroughFileSystem(new LiveSettings(options), NullLogger.Instance, allowFileHandles: true);
        var store = StateStore.Attach(Libc.fcntl(_store.Fd, Libc.F_DUPFD_CLOEXEC, 3));
        restored = fs.AttachStore(store, out _, out _);
        if (restored is null)
        {
            var flags = fs.Init((InitFlags)ulong.MaxValue);
            store.WriteInit(31, (ulong)flags, fs.Generation);
        }
        return fs;
    }

    private static FuseContext Request(ulong unique) => new(new RequestId(unique), 0, 0, 1);

    private long LookupsOf(ulong node)
    {
        for (int slot = 0; slot < _store.NodeHighWater; slot++)
            if (_store.TryReadNode(slot, out var record) && record!.Id == node) return record.Lookups;
        return 0;
    }

    [Fact]
    public void LookupSentAgainAfterACrash_IsCountedOnce_ANewLookupCountsAsUsual()
    {
        File.WriteAllText(Path.Combine(_dir, "x"), "x");
        var first = Daemon(out _);
        var a = first.Lookup(Request(100), NodeId.Root, "x"u8);
        Assert.True(a.IsOk);
        var b = first.Lookup(Request(102), NodeId.Root, "x"u8);
        Assert.Equal(a.Value.Nodeid, b.Value.Nodeid);
        Assert.Equal(2, LookupsOf(a.Value.Nodeid));
        // The daemon dies here; the guest never got the reply to 102, so the vdev sends it again.

        var second = Daemon(out var restored);
        Assert.NotNull(restored);
        Assert.Equal(1, restored.Value.Nodes);
        var again = second.Lookup(Request(102), NodeId.Root, "x"u8);
        Assert.True(again.IsOk);
        Assert.Equal(a.Value.Nodeid, again.Value.Nodeid);
        Assert.Equal(2, LookupsOf(a.Value.Nodeid));
        // A second copy of it, or a request the guest sends after the crash, is counted.
        Assert.True(second.Lookup(Request(102), NodeId.Root, "x"u8).IsOk);
        Assert.Equal(3, LookupsOf(a.Value.Nodeid));
        Assert.True(second.Lookup(Request(300), NodeId.Root, "x"u8).IsOk);
        Assert.Equal(4, LookupsOf(a.Value.Nodeid));

        // The guest forgets what it holds (two replies of the first daemon, two of the second): the record goes.
        second.Forget(new NodeId(a.Value.Nodeid), 4);
        Assert.Equal(0, LookupsOf(a.Value.Nodeid));
        first.DetachStore();
        first.Dispose();
        second.Dispose();
    }

    public void Dispose()
    {
        _store.Dispose();
        Directory.Delete(_dir, recursive: true);
    }
}
