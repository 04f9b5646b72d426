using Hypervisor.Passthrough.Share;
using Hypervisor.Protocol.Share;
using Hypervisor.Protocol.Fuse;
using static Hypervisor.Passthrough.Tests.FileSystem.TestShare;

namespace Hypervisor.Passthrough.Tests.FileSystem;

public sealed partial class PassthroughFileSystemTests
{
    [Fact]
    public void XAttrs_WhenEnabled_SetGetListRemove_WithSizeQueries()
    {
        using var share = new TestShare(o => o.Xattr = true);
        File.WriteAllText(share.HostPath("f"), "");
        var node = share.Walk("f");
        Assert.True((share.Fs.Negotiated & InitFlags.SetXAttrExt) != 0);
        Assert.Equal(Errno.Ok, share.Fs.SetXAttr(Root, node, N("user.colour"), "blue"u8, new SetXAttrIn { Size = 4 }));
        Assert.Equal(4, share.Fs.GetXAttr(Root, node, N("user.colour"), Span<byte>.Empty).Value);
        var value = new byte[16];
        Assert.Equal(4, share.Fs.GetXAttr(Root, node, N("user.colour"), value).Value);
        Assert.Equal("blue"u8.ToArray(), value[..4]);
        Assert.Equal(Errno.ERANGE, share.Fs.GetXAttr(Root, node, N("user.colour"), new byte[2]).Error);
        Assert.Equal(Errno.ENODATA, share.Fs.GetXAttr(Root, node, N("user.none"), value).Error);
        // XATTR_CREATE on an existing name
        Assert.Equal(Errno.EEXIST, share.Fs.SetXAttr(Root, node, N("user.colour"), "red"u8, new SetXAttrIn { Size = 3, Flags = 1 }));

        var listSize = share.Fs.ListXAttr(Root, node, Span<byte>.Empty).Value;
        var list = new byte[listSize];
        Assert.Equal(listSize, share.Fs.ListXAttr(Root, node, list).Value);
        Assert.Contains("user.colour", System.Text.Encoding.UTF8.GetString(list).Split('\0'));

        Assert.Equal(Errno.Ok, share.Fs.RemoveXAttr(Root, node, N("user.colour")));
        Assert.Equal(Errno.ENODATA, share.Fs.GetXAttr(Root, node, N("user.colour"), value).Error);

        // symlinks: user.* attributes are refused as on a local filesystem; the target is untouched
        File.CreateSymbolicLink(share.HostPath("l"), share.HostPath("f"));
        var link = share.Walk("l");
        Assert.Equal(Errno.EPERM, share.Fs.SetXAttr(Root, link, N("user.x"), "1"u8, new SetXAttrIn { Size = 1 }));
    }

    [Fact]
    public void XAttrs_WhenDisabled_AreENOSYS()
    {
        using var share = new TestShare();
        File.WriteAllText(share.HostPath("f"), "");
        var node = share.Walk("f");
        Assert.True((share.Fs.Negotiated & InitFlags.SetXAttrExt) == 0);
        Assert.Equal(Errno.ENOSYS, share.Fs.SetXAttr(Root, node, N("user.a"), "1"u8, new SetXAttrIn { Size = 1 }));
        Assert.Equal(Errno.ENOSYS, share.Fs.GetXAttr(Root, node, N("user.a"), new byte[4]).Error);
        Assert.Equal(Errno.ENOSYS, share.Fs.ListXAttr(Root, node, new byte[4]).Error);
        Assert.Equal(Errno.ENOSYS, share.Fs.RemoveXAttr(Root, node, N("user.a")));
    }

    [Fact]
    public void ReadOnlyShare_RefusesEveryChange_AndStillReads()
    {
        using var share = new TestShare(o => { o.Readonly = true; o.Xattr = true; });
        File.WriteAllText(share.HostPath("f"), "data");
        Directory.CreateDirectory(share.HostPath("d"));
        var f = share.Walk("f");
        var fs = share.Fs;
        Assert.Equal(Errno.EROFS, fs.Open(Root, f, new OpenIn { Flags = 1 }).Error);
        Assert.Equal(Errno.EROFS, fs.Open(Root, f, new OpenIn { Flags = 2 }).Error);
        Assert.Equal(Errno.EROFS, fs.Open(Root, f, new OpenIn { Flags = 0x200 }).Error);
        Assert.Equal(Errno.EROFS, fs.Create(Root, NodeId.Root, N("n"), new CreateIn { Flags = 1, Mode = 0x1A4 }).Error);
        Assert.Equal(Errno.EROFS, fs.MkDir(Root, NodeId.Root, N("n"), new MkDirIn { Mode = 0x1ED }).Error);
        Assert.Equal(Errno.EROFS, fs.MkNod(Root, NodeId.Root, N("n"), new MkNodIn { Mode = 0x8000 | 0x1A4 }).Error);
        Assert.Equal(Errno.EROFS, fs.Symlink(Root, NodeId.Root, N("n"), N("f")).Error);
        Assert.Equal(Errno.EROFS, fs.Link(Root, f, NodeId.Root, N("n")).Error);
        Assert.Equal(Errno.EROFS, fs.Unlink(Root, NodeId.Root, N("f")));
        Assert.Equal(Errno.EROFS, fs.RmDir(Root, NodeId.Root, N("d")));
        Assert.Equal(Errno.EROFS, fs.Rename(Root, NodeId.Root, N("f"), NodeId.Root, N("g"), 0));
        Assert.Equal(Errno.EROFS, fs.SetAttr(Root, f, new SetAttrIn { Valid = 1, Mode = 0x1FF }).Error);
        Assert.Equal(Errno.EROFS, fs.SetXAttr(Root, f, N("user.a"), "1"u8, new SetXAttrIn { Size = 1 }));
        Assert.Equal(Errno.EROFS, fs.RemoveXAttr(Root, f, N("user.a")));
        Assert.Equal(Errno.EROFS, fs.Access(Root, f, 2));
        var fh = share.OpenFile(f, 0);
        Assert.Equal(Errno.EROFS, fs.Write(Root, f, new WriteIn { Fh = fh, Size = 1 }, "x"u8).Error);
        Assert.Equal(Errno.EROFS, fs.FAllocate(Root, f, new FAllocateIn { Fh = fh, Length = 10 }));
        Assert.Equal("data", System.Text.Encoding.UTF8.GetString(share.ReadAll(f, fh)));
        Assert.Equal(Errno.Ok, fs.Access(Root, f, 4));
        Assert.True(File.Exists(share.HostPath("f")) && Directory.Exists(share.HostPath("d")));
        Assert.Equal("data", File.ReadAllText(share.HostPath("f")));
    }

    [Theory]
    [InlineData(CachePolicy.Never, 0ul, true, false)]
    [InlineData(CachePolicy.Metadata, 86400ul, true, false)]
    [InlineData(CachePolicy.Auto, 1ul, false, false)]
    [InlineData(CachePolicy.Always, 86400ul, false, true)]
    public void CachePolicy_SetsTimeoutsAndOpenFlags(CachePolicy policy, ulong timeout, bool directIo, bool keepCache)
    {
        using var share = new TestShare(o => o.Cache = policy);
        File.WriteAllText(share.HostPath("f"), "");
        var e = share.Lookup(NodeId.Root, "f");
        Assert.Equal(timeout, e.EntryValid);
        Assert.Equal(timeout, e.AttrValid);
        Assert.Equal(timeout, share.Fs.GetAttr(Root, new NodeId(e.Nodeid), null).Value.AttrValid);
        var open = share.Fs.Open(Root, new NodeId(e.Nodeid), new OpenIn { Flags = 0 }).Value;
        Assert.Equal(directIo, (open.OpenFlags & (uint)OpenOutFlags.DirectIo) != 0);
        Assert.Equal(keepCache, (open.OpenFlags & (uint)OpenOutFlags.KeepCache) != 0);
        var created = share.Fs.Create(Root, NodeId.Root, N("g"), new CreateIn { Flags = 1, Mode = 0x1A4 }).Value;
        Assert.Equal(timeout, created.Entry.EntryValid);
        Assert.Equal(directIo, (created.Open.OpenFlags & (uint)OpenOutFlags.DirectIo) != 0);
    }

    [Fact]
    public void DirectIo_SwitchesAtRunTime_AndODirectNeedsAllowDirectIo()
    {
        const uint O_DIRECT = 0x4000;
        using var share = new TestShare();
        File.WriteAllText(share.HostPath("f"), "");
        var f = share.Walk("f");
        Assert.Equal(0u, share.Fs.Open(Root, f, new OpenIn()).Value.OpenFlags & (uint)OpenOutFlags.DirectIo);
        // O_DIRECT without --allow-direct-io is dropped: page cache I/O, no FOPEN_DIRECT_IO
        Assert.Equal(0u, share.Fs.Open(Root, f, new OpenIn { Flags = O_DIRECT }).Value.OpenFlags & (uint)OpenOutFlags.DirectIo);
        share.Settings.DirectIo = true;
        Assert.NotEqual(0u, share.Fs.Open(Root, f, new OpenIn()).Value.OpenFlags & (uint)OpenOutFlags.DirectIo);
        share.Settings.DirectIo = false;
        Assert.Equal(0u, share.Fs.Open(Root, f, new OpenIn()).Value.OpenFlags & (uint)OpenOutFlags.DirectIo);

        using var allowing = new TestShare(o => o.AllowDirectIo = true);
        File.WriteAllText(allowing.HostPath("f"), "");
        var g = allowing.Walk("f");
        Assert.NotEqual(0u, allowing.Fs.Open(Root, g, new OpenIn { Flags = O_DIRECT }).Value.OpenFlags & (uint)OpenOutFlags.DirectIo);
        Assert.Equal(0u, allowing.Fs.Open(Root, g, new OpenIn()).Value.OpenFlags & (uint)OpenOutFlags.DirectIo);
    }

    [Fact]
    public void Allowlist_HidesPathsOutsideIt_InLookupAndReadDir()
    {
        using var share = new TestShare();
        Directory.CreateDirectory(share.HostPath("a/b"));
        Directory.CreateDirectory(share.HostPath("a/other"));
        Directory.CreateDirectory(share.HostPath("x"));
        File.WriteAllText(share.HostPath("a/b/c.txt"), "c");
        File.WriteAllText(share.HostPath("top.txt"), "t");
        share.Settings.Allowlist = new Allowlist(["a/b"]);

        var a = share.Lookup(NodeId.Root, "a");
        var b = share.Lookup(new NodeId(a.Nodeid), "b");
        share.Lookup(new NodeId(b.Nodeid), "c.txt");
        Assert.Equal(Errno.ENOENT, share.Fs.Lookup(Root, NodeId.Root, N("x")).Error);
        Assert.Equal(Errno.ENOENT, share.Fs.Lookup(Root, NodeId.Root, N("top.txt")).Error);
        Assert.Equal(Errno.ENOENT, share.Fs.Lookup(Root, new NodeId(a.Nodeid), N("other")).Error);

        var fh = share.Fs.OpenDir(Root, NodeId.Root, new OpenIn()).Value.Fh;
        Assert.Equal(new HashSet<string> { ".", "..", "a" }, ReadAllEntries(share, NodeId.Root, fh, false, 4096).Keys.ToHashSet());
        var afh = share.Fs.OpenDir(Root, new NodeId(a.Nodeid), new OpenIn()).Value.Fh;
        Assert.Equal(new HashSet<string> { ".", "..", "b" }, ReadAllEntries(share, new NodeId(a.Nodeid), afh, true, 4096).Keys.ToHashSet());

        // The check follows renames: the allowed directory moved away is no longer reachable through its node.
        Assert.Equal(0, Host.rename(share.HostPath("a/b"), share.HostPath("x/b")));
        Assert.Equal(Errno.ENOENT, share.Fs.Lookup(Root, new NodeId(b.Nodeid), N("c.txt")).Error);

        share.Settings.Allowlist = null;
        share.Lookup(NodeId.Root, "x");
        share.Lookup(NodeId.Root, "top.txt");
    }

    [Fact]
    public void Init_AsksForWhatItImplements_MaskedByTheOffer()
    {
        using var share = new TestShare();
        var all = share.Fs.Init((InitFlags)ulong.MaxValue);
        foreach (var flag in new[] { InitFlags.AsyncRead, InitFlags.PosixLocks, InitFlags.FlockLocks, InitFlags.AtomicOTrunc,
                     InitFlags.BigWrites, InitFlags.DoReadDirPlus, InitFlags.ReadDirPlusAuto, InitFlags.ParallelDirOps,
                     InitFlags.MaxPages, InitFlags.HandleKillPrivV2, InitFlags.ExportSupport, InitFlags.CacheSymlinks, InitFlags.Submounts })
            Assert.True((all & flag) != 0, $"{flag} not requested");
        // not asked for unless configured: the kernel applies the umask; no writeback cache; no xattr extension; no
        // mmap with direct I/O
        Assert.Equal(InitFlags.None, all & (InitFlags.DontMask | InitFlags.WritebackCache | InitFlags.SetXAttrExt | InitFlags.PosixAcl
            | InitFlags.DirectIoAllowMmap));
        Assert.Equal(InitFlags.AsyncRead, share.Fs.Init(InitFlags.AsyncRead | InitFlags.WritebackCache | InitFlags.DontMask));

        using var options = new TestShare(o => { o.KillprivV2 = false; o.AllowMmap = true; o.NoReaddirplus = true; o.AnnounceSubmounts = false; });
        var chosen = options.Fs.Init((InitFlags)ulong.MaxValue);
        Assert.Equal(InitFlags.DirectIoAllowMmap,
            chosen & (InitFlags.HandleKillPrivV2 | InitFlags.DirectIoAllowMmap | InitFlags.DoReadDirPlus | InitFlags.ReadDirPlusAuto | InitFlags.Submounts));

        using var writeback = new TestShare(o => o.Writeback = true);
        Assert.NotEqual(InitFlags.None, writeback.Fs.Init((InitFlags)ulong.MaxValue) & InitFlags.WritebackCache);
        // with the writeback cache a write-only open is read-write on the host (the kernel reads partial pages)
        File.WriteAllText(writeback.HostPath("f"), "abc");
        var f = writeback.Walk("f");
        var fh = writeback.OpenFile(f, 1);
        Assert.Equal("abc", System.Text.Encoding.UTF8.GetString(writeback.ReadAll(f, fh)));
    }
}
