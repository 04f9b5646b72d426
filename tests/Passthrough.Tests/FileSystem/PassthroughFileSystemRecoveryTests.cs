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

    private PassthroughFileSystem Daemon(out PassthroughFileSystem.Restored? restored, bool fileHandles = true)
    {
        var options = ShareVocabulary.Defaults();
        options.SharedDir = _dir;
        var fs = new PassthroughFileSystem(new LiveSettings(options), NullLogger.Instance, allowFileHandles: fileHandles);
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

    private static ulong Look(PassthroughFileSystem fs, ulong parent, string name)
    {
        var entry = fs.Lookup(Request(1), new NodeId(parent), System.Text.Encoding.UTF8.GetBytes(name));
        Assert.True(entry.IsOk, $"LOOKUP {name}: {(entry.IsOk ? "" : entry.Error.ToString())}");
        return entry.Value.Nodeid;
    }

    private static Errno GetAttr(PassthroughFileSystem fs, ulong node, out ulong size)
    {
        var attr = fs.GetAttr(Request(1), new NodeId(node), null);
        size = attr.IsOk ? attr.Value.Attr.Size : 0;
        return attr.IsOk ? Errno.Ok : attr.Error;
    }

    private static string ReadAll(PassthroughFileSystem fs, ulong node, ulong? fh = null)
    {
        ulong handle = fh ?? fs.Open(Request(1), new NodeId(node), new OpenIn { Flags = 0 }).Value.Fh;
        var buffer = new byte[256];
        var n = fs.Read(Request(1), new NodeId(node), new ReadIn { Fh = handle, Offset = 0, Size = 256 }, buffer);
        Assert.True(n.IsOk);
        return System.Text.Encoding.UTF8.GetString(buffer, 0, n.Value);
    }

    private int SlotOf(ulong node)
    {
        for (int slot = 0; slot < _store.NodeHighWater; slot++)
            if (_store.TryReadNode(slot, out var record) && record!.Id == node) return slot;
        return -1;
    }

    private NodeRecord RecordOf(ulong node)
    {
        Assert.True(_store.TryReadNode(SlotOf(node), out var record));
        return record!;
    }

    [Fact]
    public void NoFileHandles_NodesAreRecordedByParentAndName_AndComeBackByName()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "a", "b"));
        File.WriteAllText(Path.Combine(_dir, "a", "b", "f"), "nested");
        File.WriteAllText(Path.Combine(_dir, "a", "g"), "moved");
        File.WriteAllText(Path.Combine(_dir, "h"), "hostmoved");
        var first = Daemon(out _, fileHandles: false);
        Assert.False(first.UsesFileHandles);
        var a = Look(first, FuseConstants.RootId, "a");
        var b = Look(first, a, "b");
        var f = Look(first, b, "f");
        var g = Look(first, a, "g");
        var h = Look(first, FuseConstants.RootId, "h");
        var fh = first.Open(Request(1), new NodeId(f), new OpenIn { Flags = 0 }).Value.Fh;
        Assert.Equal(b, RecordOf(f).Name!.Parent);
        Assert.True(RecordOf(f).Name!.Bytes.AsSpan().SequenceEqual("f"u8));
        Assert.Empty(RecordOf(f).Handle);
        // "." and ".." never become a record's name.
        Assert.Equal(a, Look(first, b, ".."));
        Assert.True(RecordOf(a).Name!.Bytes.AsSpan().SequenceEqual("a"u8));
        // A rename through the share moves the record's name (the old one stays in the other slot).
        Assert.Equal(Errno.Ok, first.Rename(Request(1), new NodeId(a), "g"u8, new NodeId(b), "g2"u8, 0));
        Assert.Equal(b, RecordOf(g).Name!.Parent);
        Assert.True(RecordOf(g).Name!.Bytes.AsSpan().SequenceEqual("g2"u8));
        Assert.True(RecordOf(g).Previous!.Bytes.AsSpan().SequenceEqual("g"u8));
        // The daemon dies. Meanwhile the host moves h away and puts another file at its name.
        File.Move(Path.Combine(_dir, "h"), Path.Combine(_dir, "h.moved"));
        File.WriteAllText(Path.Combine(_dir, "h"), "impostor");

        var second = Daemon(out var restored, fileHandles: false);
        Assert.NotNull(restored);
        Assert.Equal(5, restored.Value.Nodes);
        Assert.Equal(1, restored.Value.Stale);
        Assert.Equal(1, restored.Value.Handles);
        Assert.Equal(Errno.Ok, GetAttr(second, f, out var size));
        Assert.Equal(6UL, size);
        Assert.Equal("nested", ReadAll(second, f));
        Assert.Equal("nested", ReadAll(second, f, fh));
        Assert.Equal("moved", ReadAll(second, g));
        Assert.Equal(Errno.ESTALE, GetAttr(second, h, out _));
        Assert.Equal(Errno.ESTALE, second.Open(Request(1), new NodeId(h), new OpenIn { Flags = 0 }).Error);
        // The same names find the same nodes; the new file at h gets a node of its own.
        Assert.Equal(f, Look(second, b, "f"));
        Assert.Equal(g, Look(second, b, "g2"));
        var h2 = Look(second, FuseConstants.RootId, "h");
        Assert.NotEqual(h, h2);
        Assert.Equal("impostor", ReadAll(second, h2));
        first.DetachStore();
        first.Dispose();
        second.Dispose();
    }

    [Fact]
    public void NoFileHandles_ParentRenamedOnTheHost_ChildrenAreStale_NeverAnotherFile()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "d"));
        File.WriteAllText(Path.Combine(_dir, "d", "x"), "old");
        var first = Daemon(out _, fileHandles: false);
        var d = Look(first, FuseConstants.RootId, "d");
        var x = Look(first, d, "x");
        // While the daemon is down the host renames the directory and makes another one, with another x, at its name.
        Directory.Move(Path.Combine(_dir, "d"), Path.Combine(_dir, "d.old"));
        Directory.CreateDirectory(Path.Combine(_dir, "d"));
        File.WriteAllText(Path.Combine(_dir, "d", "x"), "new");

        var second = Daemon(out var restored, fileHandles: false);
        Assert.Equal(2, restored!.Value.Stale);
        Assert.Equal(Errno.ESTALE, GetAttr(second, d, out _));
        Assert.Equal(Errno.ESTALE, GetAttr(second, x, out _));
        first.DetachStore();
        first.Dispose();
        second.Dispose();
    }

    [Fact]
    public void NoFileHandles_RenameExchange_SwapsBothRecords_AndAHardLinkRemovedFallsBackToTheNameBefore()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "sub"));
        File.WriteAllText(Path.Combine(_dir, "e1"), "one");
        File.WriteAllText(Path.Combine(_dir, "sub", "e2"), "two");
        File.WriteAllText(Path.Combine(_dir, "k"), "linked");
        var first = Daemon(out _, fileHandles: false);
        var sub = Look(first, FuseConstants.RootId, "sub");
        var e1 = Look(first, FuseConstants.RootId, "e1");
        var e2 = Look(first, sub, "e2");
        var k = Look(first, FuseConstants.RootId, "k");
        Assert.Equal(Errno.Ok, first.Rename(Request(1), NodeId.Root, "e1"u8, new NodeId(sub), "e2"u8, FuseConstants.RenameExchange));
        Assert.Equal(sub, RecordOf(e1).Name!.Parent);
        Assert.True(RecordOf(e1).Name!.Bytes.AsSpan().SequenceEqual("e2"u8));
        Assert.Equal(FuseConstants.RootId, RecordOf(e2).Name!.Parent);
        Assert.True(RecordOf(e2).Name!.Bytes.AsSpan().SequenceEqual("e1"u8));
        // LINK records the new name; the guest then unlinks it: the name before it still reaches the inode.
        Assert.True(first.Link(Request(1), new NodeId(k), new NodeId(sub), "k2"u8).IsOk);
        Assert.True(RecordOf(k).Name!.Bytes.AsSpan().SequenceEqual("k2"u8));
        Assert.Equal(Errno.Ok, first.Unlink(Request(1), new NodeId(sub), "k2"u8));

        var second = Daemon(out var restored, fileHandles: false);
        Assert.Equal(0, restored!.Value.Stale);
        Assert.Equal("one", ReadAll(second, e1));
        Assert.Equal("two", ReadAll(second, e2));
        Assert.Equal("linked", ReadAll(second, k));
        first.DetachStore();
        first.Dispose();
        second.Dispose();
    }

    [Fact]
    public void NoFileHandles_CrashBetweenARenameAndItsRecord_TheStagedNameReopensTheNode()
    {
        File.WriteAllText(Path.Combine(_dir, "p"), "staged");
        var first = Daemon(out _, fileHandles: false);
        var p = Look(first, FuseConstants.RootId, "p");
        // What RENAME does before renameat2, then the rename itself; the daemon dies before the record follows.
        _store.StageName(SlotOf(p), FuseConstants.RootId, "q"u8);
        Assert.True(RecordOf(p).Name!.Bytes.AsSpan().SequenceEqual("p"u8));
        File.Move(Path.Combine(_dir, "p"), Path.Combine(_dir, "q"));

        var second = Daemon(out var restored, fileHandles: false);
        Assert.Equal(0, restored!.Value.Stale);
        Assert.Equal("staged", ReadAll(second, p));
        Assert.True(RecordOf(p).Name!.Bytes.AsSpan().SequenceEqual("q"u8));
        first.DetachStore();
        first.Dispose();
        second.Dispose();
    }

    [Fact]
    public void NoFileHandles_RecordsWhoseParentsFormACycle_AreStale()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "c1"));
        var first = Daemon(out _, fileHandles: false);
        var c1 = Look(first, FuseConstants.RootId, "c1");
        first.DetachStore();
        first.Dispose();
        // Two records that name each other as parent (no daemon writes that): neither is followed forever, both are stale.
        var st = RecordOf(c1);
        _store.FreeNode(SlotOf(c1));
        _store.CoverNode(41);
        _store.WriteNode(40, 100, 1, st.Dev, st.Ino, st.Type, 101, "c1"u8);
        _store.WriteNode(41, 101, 1, st.Dev, st.Ino, st.Type, 100, "c1"u8);
        var second = Daemon(out var restored, fileHandles: false);
        Assert.Equal(2, restored!.Value.Nodes);
        Assert.Equal(2, restored.Value.Stale);
        Assert.Equal(Errno.ESTALE, GetAttr(second, 100, out _));
        Assert.Equal(Errno.ESTALE, GetAttr(second, 101, out _));
        second.Dispose();
    }

    public void Dispose()
    {
        _store.Dispose();
        Directory.Delete(_dir, recursive: true);
    }
}
