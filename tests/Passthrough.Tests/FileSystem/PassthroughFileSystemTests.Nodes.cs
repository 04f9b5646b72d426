using Hypervisor.Protocol.Share;
using Hypervisor.Interop;
using Hypervisor.Passthrough.FileSystem;
using Hypervisor.Passthrough.Share;
using Hypervisor.Protocol.Fuse;
using Microsoft.Extensions.Logging.Abstractions;
using static Hypervisor.Passthrough.Tests.FileSystem.TestShare;

namespace Hypervisor.Passthrough.Tests.FileSystem;

public sealed partial class PassthroughFileSystemTests
{
    [Fact]
    public void Constructor_MissingDirectory_SaysWhatToChange()
    {
        var missing = "/tmp/pt-fs-missing-" + Guid.NewGuid().ToString("N");
        var ex = Assert.Throws<DirectoryNotFoundException>(() =>
            new PassthroughFileSystem(new LiveSettings(new ShareSettings { SharedDir = missing }), NullLogger.Instance));
        Assert.Contains(missing, ex.Message);
        Assert.Contains("--shared-dir", ex.Message);
    }

    [Fact]
    public void Constructor_FileInsteadOfDirectory_SaysWhatToChange()
    {
        var file = Path.GetTempFileName();
        try
        {
            var ex = Assert.Throws<IOException>(() =>
                new PassthroughFileSystem(new LiveSettings(new ShareSettings { SharedDir = file }), NullLogger.Instance));
            Assert.Contains("not a directory", ex.Message);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public void Lookup_CountsLookups_AndForgetDropsNodeAtZero()
    {
        using var share = new TestShare();
        File.WriteAllText(share.HostPath("f"), "x");
        var first = share.Lookup(NodeId.Root, "f");
        var second = share.Lookup(NodeId.Root, "f");
        Assert.Equal(first.Nodeid, second.Nodeid);
        Assert.NotEqual(FuseConstants.RootId, first.Nodeid);
        Assert.Equal(2, share.Fs.KnownNodes);

        share.Fs.Forget(new NodeId(first.Nodeid), 1);
        Assert.True(share.Fs.GetAttr(Root, new NodeId(first.Nodeid), null).IsOk);
        share.Fs.Forget(new NodeId(first.Nodeid), 1);
        Assert.Equal(Errno.ENOENT, share.Fs.GetAttr(Root, new NodeId(first.Nodeid), null).Error);
        Assert.Equal(1, share.Fs.KnownNodes);
        if (!share.Fs.UsesFileHandles) return; // pinned descriptors go at once; nothing is retired

        // The forgotten node is retired: its descriptor stays cached, so a new lookup of the same inode needs no
        // open and gets the same id back (an id never comes back for another inode).
        Assert.Equal(1, share.Fs.CachedDescriptors);
        var third = share.Lookup(NodeId.Root, "f");
        Assert.Equal(first.Nodeid, third.Nodeid);
        Assert.Equal(2, share.Fs.KnownNodes);
        Assert.True(share.Fs.GetAttr(Root, new NodeId(third.Nodeid), null).IsOk);

        // A forgotten inode without a name left goes at once, so that its space is freed as on a local filesystem.
        File.Delete(share.HostPath("f"));
        share.Fs.Forget(new NodeId(third.Nodeid), 1);
        Assert.Equal(0, share.Fs.CachedDescriptors);
        File.WriteAllText(share.HostPath("f"), "y");
        Assert.NotEqual(first.Nodeid, share.Lookup(NodeId.Root, "f").Nodeid);
    }

    [Fact]
    public void RetiredNodes_AreBoundedByTheCache_AndANameNowOnAnotherInodeGetsANewNode()
    {
        using var share = new TestShare(o => o.FdCacheSize = 8);
        if (!share.Fs.UsesFileHandles) return; // pinned descriptors go at once; nothing is retired
        const int count = 100;
        var ids = new ulong[count];
        for (var i = 0; i < count; i++)
        {
            File.WriteAllText(share.HostPath($"f{i}"), $"{i}");
            ids[i] = share.Lookup(NodeId.Root, $"f{i}").Nodeid;
            share.Fs.Forget(new NodeId(ids[i]), 1);
        }
        Assert.True(share.Fs.CachedDescriptors <= 8, $"{share.Fs.CachedDescriptors} cached");
        Assert.Equal(1, share.Fs.KnownNodes);

        // the newest are still retired (same id), the oldest went with their descriptors (new id)
        Assert.Equal(ids[count - 1], share.Lookup(NodeId.Root, $"f{count - 1}").Nodeid);
        Assert.NotEqual(ids[0], share.Lookup(NodeId.Root, "f0").Nodeid);

        // a name replaced on the host names the new inode, not the retired node of the old one
        var last = count - 2;
        File.WriteAllText(share.HostPath("replacement"), "new content");
        File.Move(share.HostPath("replacement"), share.HostPath($"f{last}"), overwrite: true);
        var entry = share.Lookup(NodeId.Root, $"f{last}");
        Assert.NotEqual(ids[last], entry.Nodeid);
        Assert.Equal((ulong)"new content".Length, entry.Attr.Size);
        Assert.Equal(Host.Ino(share.HostPath($"f{last}")), entry.Attr.Ino);
    }

    [Fact]
    public void Lookup_UsesOwnNodeIds_AndHostInodeNumbersInAttributes()
    {
        using var share = new TestShare();
        File.WriteAllText(share.HostPath("f"), "hello");
        var e = share.Lookup(NodeId.Root, "f");
        Assert.Equal(5ul, e.Attr.Size);
        Assert.Equal(Libc_S_IFREG, e.Attr.Mode & 0xF000);
        Assert.NotEqual(e.Nodeid, e.Attr.Ino);
        Assert.Equal(1ul, e.EntryValid); // cache=auto
    }

    private const uint Libc_S_IFREG = 0x8000;
    private const uint Libc_S_IFDIR = 0x4000;
    private const uint Libc_S_IFLNK = 0xA000;

    [Fact]
    public void HardLinks_ShareOneNodeId()
    {
        using var share = new TestShare();
        File.WriteAllText(share.HostPath("a"), "x");
        Assert.Equal(0, Host.link(share.HostPath("a"), share.HostPath("b")));
        var a = share.Lookup(NodeId.Root, "a");
        var b = share.Lookup(NodeId.Root, "b");
        Assert.Equal(a.Nodeid, b.Nodeid);

        var c = share.Fs.Link(Root, new NodeId(a.Nodeid), NodeId.Root, N("c"));
        Assert.True(c.IsOk, c.ToString());
        Assert.Equal(a.Nodeid, c.Value.Nodeid);
        Assert.Equal(3u, c.Value.Attr.Nlink);
        // three lookups of one node: it survives two forgets, not three
        share.Fs.Forget(new NodeId(a.Nodeid), 2);
        Assert.True(share.Fs.GetAttr(Root, new NodeId(a.Nodeid), null).IsOk);
        share.Fs.Forget(new NodeId(a.Nodeid), 1);
        Assert.Equal(Errno.ENOENT, share.Fs.GetAttr(Root, new NodeId(a.Nodeid), null).Error);
    }

    [Fact]
    public void FdCache_IsBounded_AndEverythingStillWorks()
    {
        using var share = new TestShare(o => o.FdCacheSize = 8);
        Assert.True(share.Fs.UsesFileHandles || !Host.IsRoot);
        const int count = 200;
        for (var i = 0; i < count; i++) File.WriteAllText(share.HostPath($"f{i}"), $"content {i}");
        var nodes = new NodeId[count];
        for (var i = 0; i < count; i++) nodes[i] = new NodeId(share.Lookup(NodeId.Root, $"f{i}").Nodeid);
        if (share.Fs.UsesFileHandles) Assert.True(share.Fs.CachedDescriptors <= 8, $"{share.Fs.CachedDescriptors} cached");

        var handles = new ulong[count];
        for (var i = 0; i < count; i++) handles[i] = share.OpenFile(nodes[i], 0);
        Assert.Equal(count, share.Fs.OpenHandles);
        for (var i = count - 1; i >= 0; i--)
        {
            Assert.Equal($"content {i}", System.Text.Encoding.UTF8.GetString(share.ReadAll(nodes[i], handles[i])));
            var attr = share.Fs.GetAttr(Root, nodes[i], null);
            Assert.True(attr.IsOk, attr.ToString());
            Assert.Equal((ulong)$"content {i}".Length, attr.Value.Attr.Size);
        }
        if (share.Fs.UsesFileHandles) Assert.True(share.Fs.CachedDescriptors <= 8);
        for (var i = 0; i < count; i++) Assert.Equal(Errno.Ok, share.Fs.Release(Root, nodes[i], new ReleaseIn { Fh = handles[i] }));
        Assert.Equal(0, share.Fs.OpenHandles);
    }

    [Theory]
    [InlineData(InodeFileHandles.Prefer)]
    [InlineData(InodeFileHandles.Mandatory)]
    public void EvictedNodeOnAnotherMount_StillWorks_PinnedWithPrefer_ByHandleAgainstItsMountWithMandatory(InodeFileHandles mode)
    {
        using var share = new TestShare(o => { o.FdCacheSize = 1; o.InodeFileHandles = mode; });
        if (!share.Fs.UsesFileHandles) return; // every node is pinned from the start: there is no eviction to check
        var sub = share.HostPath("sub");
        Directory.CreateDirectory(sub);
        Assert.Equal(0, Libc.mount("pt-test", sub, "tmpfs", 0, "size=1m"));
        try
        {
            File.WriteAllText(Path.Combine(sub, "f"), "on tmpfs");
            var f = new NodeId(share.Lookup(share.Walk("sub"), "f").Nodeid);
            File.WriteAllText(share.HostPath("other"), "");
            share.Lookup(NodeId.Root, "other"); // evicts f's descriptor: its handle would not decode against the share
            Assert.True(share.Fs.CachedDescriptors <= 1, $"{share.Fs.CachedDescriptors} cached");
            Assert.Equal(mode == InodeFileHandles.Mandatory ? 1 : 0, share.Fs.SubmountDescriptors);
            var attr = share.Fs.GetAttr(Root, f, null);
            Assert.True(attr.IsOk, attr.ToString());
            Assert.Equal((ulong)"on tmpfs".Length, attr.Value.Attr.Size);
            var fh = share.OpenFile(f, 0);
            Assert.Equal("on tmpfs", System.Text.Encoding.UTF8.GetString(share.ReadAll(f, fh)));
            Assert.Equal(Errno.Ok, share.Fs.Release(Root, f, new ReleaseIn { Fh = fh }));
        }
        finally
        {
            Libc.umount2(sub, Libc.MNT_DETACH);
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    [Trait("Category", "Root")]
    public void AMountBelowTheShare_IsAnnouncedAsASubmount_UnlessTurnedOff(bool announce)
    {
        using var share = new TestShare(o => o.AnnounceSubmounts = announce);
        share.Fs.Init((InitFlags)ulong.MaxValue);
        var sub = share.HostPath("sub");
        Directory.CreateDirectory(sub);
        Directory.CreateDirectory(share.HostPath("plain"));
        Assert.Equal(0, Libc.mount("pt-test", sub, "tmpfs", 0, "size=1m"));
        try
        {
            Directory.CreateDirectory(Path.Combine(sub, "inner"));
            var entry = share.Fs.Lookup(Root, NodeId.Root, "sub"u8);
            Assert.True(entry.IsOk, entry.ToString());
            Assert.Equal(announce ? FuseConstants.AttrSubmount : 0u, entry.Value.Attr.Flags);
            Assert.Equal(0u, share.Fs.Lookup(Root, NodeId.Root, "plain"u8).Value.Attr.Flags);
            Assert.Equal(0u, share.Fs.Lookup(Root, new NodeId(entry.Value.Nodeid), "inner"u8).Value.Attr.Flags);
        }
        finally
        {
            Libc.umount2(sub, Libc.MNT_DETACH);
        }
    }

    [Fact]
    public void ManyLookupsAndForgets_LeaveNoNodesOrDescriptors()
    {
        using var share = new TestShare(o => o.FdCacheSize = 100);
        const int count = 20_000;
        Directory.CreateDirectory(share.HostPath("d"));
        for (var i = 0; i < count; i++) File.Create(share.HostPath($"d/{i}")).Dispose();
        var dir = share.Walk("d");
        for (var i = 0; i < count; i++)
        {
            var e = share.Fs.Lookup(Root, dir, N(i.ToString()));
            Assert.True(e.IsOk);
            share.Fs.Forget(new NodeId(e.Value.Nodeid), 1);
        }
        Assert.Equal(2, share.Fs.KnownNodes); // root and d
        Assert.True(share.Fs.CachedDescriptors <= 100, $"{share.Fs.CachedDescriptors} cached"); // retired nodes' descriptors stay bounded
    }

    [Fact]
    public void Destroy_ForgetsNodesAndHandles_RootSurvives()
    {
        using var share = new TestShare();
        File.WriteAllText(share.HostPath("f"), "x");
        var node = share.Walk("f");
        var fh = share.OpenFile(node, 0);
        share.Fs.Destroy();
        share.Fs.Init((InitFlags)ulong.MaxValue);
        Assert.Equal(1, share.Fs.KnownNodes);
        Assert.Equal(0, share.Fs.OpenHandles);
        Assert.Equal(Errno.ENOENT, share.Fs.GetAttr(Root, node, null).Error);
        Assert.Equal(Errno.EBADF, share.Fs.Read(Root, node, new ReadIn { Fh = fh, Size = 10 }, new byte[10]).Error);
        Assert.True(share.Fs.GetAttr(Root, NodeId.Root, null).IsOk);
        Assert.NotEqual(node.Value, share.Walk("f").Value);
    }

    [Fact]
    public void UnknownNode_IsENOENT_AndBadHandles_AreEBADF()
    {
        using var share = new TestShare();
        File.WriteAllText(share.HostPath("f"), "x");
        var bogus = new NodeId(987654);
        Assert.Equal(Errno.ENOENT, share.Fs.GetAttr(Root, bogus, null).Error);
        Assert.Equal(Errno.ENOENT, share.Fs.Lookup(Root, bogus, N("f")).Error);
        Assert.Equal(Errno.ENOENT, share.Fs.Open(Root, bogus, new OpenIn()).Error);

        var node = share.Walk("f");
        Assert.Equal(Errno.EBADF, share.Fs.Read(Root, node, new ReadIn { Fh = 4242, Size = 1 }, new byte[1]).Error);
        Assert.Equal(Errno.EBADF, share.Fs.Write(Root, node, new WriteIn { Fh = 4242, Size = 1 }, new byte[1]).Error);
        Assert.Equal(Errno.EBADF, share.Fs.Release(Root, node, new ReleaseIn { Fh = 4242 }));

        // handles of the wrong kind
        var dirFh = share.Fs.OpenDir(Root, NodeId.Root, new OpenIn()).Value.Fh;
        var fileFh = share.OpenFile(node, 0);
        Assert.Equal(Errno.EBADF, share.Fs.Read(Root, NodeId.Root, new ReadIn { Fh = dirFh, Size = 1 }, new byte[1]).Error);
        Assert.Equal(Errno.EBADF, share.Fs.ReadDir(Root, node, new ReadIn { Fh = fileFh, Size = 4096 }, new byte[4096], false).Error);
        Assert.Equal(Errno.EBADF, share.Fs.ReleaseDir(Root, node, new ReleaseIn { Fh = fileFh }));
        Assert.Equal(Errno.EBADF, share.Fs.Release(Root, NodeId.Root, new ReleaseIn { Fh = dirFh }));
        // a handle named with another node
        Assert.Equal(Errno.EBADF, share.Fs.Read(Root, NodeId.Root, new ReadIn { Fh = fileFh, Size = 1 }, new byte[1]).Error);
    }

    [Fact]
    public void ReusedInodeNumber_GetsANewNode_NotTheStaleOne()
    {
        using var share = new TestShare(o => o.FdCacheSize = 1);
        if (!share.Fs.UsesFileHandles) return; // pinned descriptors keep inodes alive: numbers cannot be reused
        File.WriteAllText(share.HostPath("old"), "old");
        var old = share.Lookup(NodeId.Root, "old");
        File.WriteAllText(share.HostPath("other"), "");
        share.Lookup(NodeId.Root, "other"); // evicts old's descriptor (cache of one)
        File.Delete(share.HostPath("old"));
        string? reused = null;
        for (var i = 0; i < 200 && reused is null; i++)
        {
            var path = share.HostPath($"new{i}");
            File.WriteAllText(path, "new");
            if (Host.Ino(path) == old.Attr.Ino) reused = $"new{i}";
        }
        if (reused is null) return; // the host filesystem did not reuse the number; nothing to check
        var fresh = share.Lookup(NodeId.Root, reused);
        Assert.NotEqual(old.Nodeid, fresh.Nodeid);
        Assert.Equal(3ul, fresh.Attr.Size);
        Assert.Equal(Errno.ESTALE, share.Fs.GetAttr(Root, new NodeId(old.Nodeid), null).Error);
        // the old node is still known until the client forgets it, and forgetting it leaves the new one alone
        share.Fs.Forget(new NodeId(old.Nodeid), 1);
        Assert.True(share.Fs.GetAttr(Root, new NodeId(fresh.Nodeid), null).IsOk);
        Assert.Equal(fresh.Nodeid, share.Lookup(NodeId.Root, reused).Nodeid);
    }
}
