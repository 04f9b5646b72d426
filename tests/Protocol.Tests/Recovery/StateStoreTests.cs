using Hypervisor.Protocol.Recovery;
using Hypervisor.Protocol.Ring;

namespace Hypervisor.Protocol.Tests.Recovery;

/// <summary>The state store as a second process sees it: what the vdev created and a daemon wrote survives the daemon.</summary>
public sealed class StateStoreTests
{
    [Fact]
    public void RecordsWrittenThroughOneMapping_AreReadThroughAnother_AsADaemonStartedAfterACrashReadsThem()
    {
        using var vdev = StateStore.Create(nodes: 64, handles: 16);
        // A second mapping of the same memfd, as the daemon's (a dup stands for the inherited descriptor).
        using var daemon = StateStore.Attach(Hypervisor.Interop.Libc.fcntl(vdev.Fd, Hypervisor.Interop.Libc.F_DUPFD_CLOEXEC, 3));
        var slots = new StoreSlots(daemon.NodeCapacity, daemon.NodeHighWater, s => daemon.TryReadNode(s, out _), daemon.CoverNode);
        int a = slots.Take(), b = slots.Take();
        var handle = new byte[] { 8, 0, 0, 0, 1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8 };
        daemon.WriteNode(a, 7, 1, 0x801, 1234, 0x8000, handle);
        daemon.WriteNode(b, 8, 1, 0x801, 1235, 0x4000, []);
        daemon.SetLookups(a, 3);
        daemon.FreeNode(b);
        slots.Give(b);
        daemon.WriteHandle(0, 42, 7, 2, isDir: false);
        daemon.WriteInit(41, 0x1234_5678_9abcUL, 5);
        Assert.True(daemon.WriteSettings([1, 2, 3]));
        Assert.True(daemon.WriteSettings([4, 5]));
        Interlocked.Increment(ref daemon.NextNodeId);

        using var next = StateStore.Attach(Hypervisor.Interop.Libc.fcntl(vdev.Fd, Hypervisor.Interop.Libc.F_DUPFD_CLOEXEC, 3));
        Assert.Equal(2, next.NodeHighWater);
        Assert.True(next.TryReadNode(a, out var node));
        Assert.Equal(new NodeRecord(7, 3, 0x801, 1234, 0x8000, handle) with { Handle = node!.Handle }, node);
        Assert.Equal(handle, node.Handle);
        Assert.False(next.TryReadNode(b, out _));
        Assert.True(next.TryReadHandle(0, out var fh));
        Assert.Equal(new HandleRecord(42, 7, 2, false), fh);
        Assert.True(next.TryReadInit(out var minor, out var flags, out var generation));
        Assert.Equal((41u, 0x1234_5678_9abcUL, 5UL), (minor, flags, generation));
        Assert.Equal(new byte[] { 4, 5 }, next.ReadSettings());
        Assert.Equal(1, Volatile.Read(ref next.NextNodeId));
        // The freed slot is handed out again before a new one.
        var again = new StoreSlots(next.NodeCapacity, next.NodeHighWater, s => next.TryReadNode(s, out _), next.CoverNode);
        Assert.Equal(b, again.Take());
        Assert.Equal(2, again.Take());

        next.ClearInit();
        Assert.False(vdev.TryReadInit(out _, out _, out _));
        vdev.RecordRestart("the daemon process exited", 2_000_000);
        vdev.RecordRestart("the daemon process exited", 3_000_000);
        Assert.Equal(new RestartRecord(2, "the daemon process exited", 3_000_000, 5_000_000), daemon.Restarts);
    }

    [Fact]
    public void RingDescriptor_CarriesTheStateStore_AndParsesItBack()
    {
        var fds = RingFds.Parse("memfd=5,queues=1,sq0=6,sqf0=7,cq0=8,cqf0=9,creator=10,state=11");
        Assert.Equal(11, fds.StateFd);
        Assert.Contains((11, "state"), fds.Named());
        Assert.EndsWith(",state=11", fds.ToString(), StringComparison.Ordinal);
        Assert.Null(RingFds.Parse("memfd=5,queues=1,sq0=6,sqf0=7,cq0=8,cqf0=9").StateFd);
    }
}
