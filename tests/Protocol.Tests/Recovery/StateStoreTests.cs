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
    public void NodeWithoutAHandle_IsRecordedByParentAndName_AndANameChangeLeavesTheOldOrTheNew()
    {
        using var store = StateStore.Create(nodes: 8, handles: 4);
        store.CoverNode(1);
        store.WriteNode(0, 5, 1, 0x801, 99, 0x8000, 1, "file"u8);
        Assert.True(store.TryReadNode(0, out var record));
        Assert.Empty(record!.Handle);
        Assert.Equal(1UL, record.Name!.Parent);
        Assert.Equal("file"u8.ToArray(), record.Name.Bytes);
        Assert.Null(record.Previous);

        // Staged: the current name stays, the other slot holds the new one.
        store.StageName(0, 7, "renamed"u8);
        Assert.True(store.TryReadNode(0, out record));
        Assert.Equal("file"u8.ToArray(), record!.Name!.Bytes);
        Assert.Equal(7UL, record.Previous!.Parent);
        Assert.Equal("renamed"u8.ToArray(), record.Previous.Bytes);
        // Set: the staged slot becomes current; the old name is the other one now.
        Assert.True(store.SetName(0, 7, "renamed"u8));
        Assert.True(store.TryReadNode(0, out record));
        Assert.Equal(7UL, record!.Name!.Parent);
        Assert.Equal("renamed"u8.ToArray(), record.Name.Bytes);
        Assert.Equal("file"u8.ToArray(), record.Previous!.Bytes);

        // A name of NAME_MAX bytes fits; what is not one component is never written.
        var longest = Enumerable.Repeat((byte)'n', StateStore.MaxName).ToArray();
        Assert.True(store.SetName(0, 7, longest));
        Assert.True(store.TryReadNode(0, out record));
        Assert.Equal(longest, record!.Name!.Bytes);
        foreach (var bad in new[] { ""u8.ToArray(), "."u8.ToArray(), ".."u8.ToArray(), "a/b"u8.ToArray(), new byte[] { (byte)'a', 0, (byte)'b' }, new byte[StateStore.MaxName + 1] })
        {
            Assert.False(StateStore.IsValidName(bad));
            Assert.False(store.SetName(0, 7, bad));
        }
        Assert.False(store.SetName(0, 0, "x"u8));
        Assert.True(store.TryReadNode(0, out record));
        Assert.Equal(longest, record!.Name!.Bytes);

        // A record with a handle has no name; ClearName leaves a named record without one.
        store.WriteNode(1, 6, 1, 0x801, 100, 0x8000, new byte[] { 4, 0, 0, 0, 1, 0, 0, 0, 9, 9, 9, 9 });
        Assert.True(store.TryReadNode(1, out record));
        Assert.Null(record!.Name);
        store.ClearName(0);
        Assert.True(store.TryReadNode(0, out record));
        Assert.Null(record!.Name);
        Assert.Null(record.Previous);
    }

    [Theory]
    [InlineData("..")]
    [InlineData(".")]
    [InlineData("a/b")]
    [InlineData("a\0b")]
    [InlineData("")]
    public void NameInTheStore_ThatIsNotOneComponent_IsNeverReturned(string written)
    {
        using var store = StateStore.Create(nodes: 8, handles: 4);
        store.CoverNode(0);
        store.WriteNode(0, 5, 1, 0x801, 99, 0x4000, 1, "good"u8);
        var bytes = System.Text.Encoding.UTF8.GetBytes(written);
        // Written past the API, as a daemon gone wrong could: slot 1 of node slot 0's name record.
        long names = StateStore.HeaderSize + 2L * StateStore.SettingsBufferSize + 8L * StateStore.NodeRecordSize + 4L * StateStore.HandleRecordSize;
        using (var raw = File.OpenHandle($"/proc/self/fd/{store.Fd}", FileMode.Open, FileAccess.ReadWrite))
        {
            var length = BitConverter.GetBytes((uint)bytes.Length);
            RandomAccess.Write(raw, length, names + 8 + 8);
            RandomAccess.Write(raw, bytes, names + 8 + 12);
        }
        Assert.True(store.TryReadNode(0, out var record));
        Assert.Null(record!.Name);
        // Nor a length beyond NAME_MAX, nor a parent of 0 or the node itself.
        using (var raw = File.OpenHandle($"/proc/self/fd/{store.Fd}", FileMode.Open, FileAccess.ReadWrite))
        {
            RandomAccess.Write(raw, BitConverter.GetBytes(4u), names + 8 + 8);
            RandomAccess.Write(raw, "good"u8.ToArray(), names + 8 + 12);
            Assert.True(store.TryReadNode(0, out record));
            Assert.NotNull(record!.Name);
            RandomAccess.Write(raw, BitConverter.GetBytes(5000u), names + 8 + 8);
            Assert.True(store.TryReadNode(0, out record));
            Assert.Null(record!.Name);
            RandomAccess.Write(raw, BitConverter.GetBytes(4u), names + 8 + 8);
            RandomAccess.Write(raw, BitConverter.GetBytes(5UL), names + 8);
            Assert.True(store.TryReadNode(0, out record));
            Assert.Null(record!.Name);
        }
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
