using System.Text;
using Hypervisor.Protocol.Fuse;
using static Hypervisor.Passthrough.Tests.FileSystem.TestShare;

namespace Hypervisor.Passthrough.Tests.FileSystem;

public sealed partial class PassthroughFileSystemTests
{
    private const uint F_RDLCK = 0, F_WRLCK = 1, F_UNLCK = 2;
    private const ulong OffsetMax = long.MaxValue;

    private static LkIn Lock(ulong fh, ulong owner, uint type, ulong start = 0, ulong end = OffsetMax) =>
        new() { Fh = fh, Owner = owner, Lk = new FileLock { Start = start, End = end, Type = type } };

    [Fact]
    public void PosixLocks_BelongToTheOwner_AndFlushReleasesThem()
    {
        using var share = new TestShare();
        File.WriteAllText(share.HostPath("f"), "0123456789");
        var f = share.Walk("f");
        var fs = share.Fs;
        var a1 = share.OpenFile(f, 2);
        var a2 = share.OpenFile(f, 2);
        var b = share.OpenFile(f, 2);

        Assert.Equal(Errno.Ok, fs.SetLk(Root, f, Lock(a1, owner: 1, F_WRLCK, 0, 4), wait: false));
        // the same owner through another open file does not conflict (POSIX: locks are per process)
        Assert.Equal(Errno.Ok, fs.SetLk(Root, f, Lock(a2, owner: 1, F_WRLCK, 2, 6), wait: false));
        // another owner conflicts
        Assert.Equal(Errno.EAGAIN, fs.SetLk(Root, f, Lock(b, owner: 2, F_RDLCK, 3, 3), wait: false));
        var probe = fs.GetLk(Root, f, Lock(b, owner: 2, F_WRLCK, 0, OffsetMax));
        Assert.True(probe.IsOk, probe.ToString());
        Assert.Equal(F_WRLCK, probe.Value.Type);
        Assert.Equal(0ul, probe.Value.Start);
        Assert.Equal(6ul, probe.Value.End);
        // the owner itself sees no conflict with its own lock
        Assert.Equal(F_UNLCK, fs.GetLk(Root, f, Lock(a1, owner: 1, F_WRLCK)).Value.Type);
        // a range outside the lock is free
        Assert.Equal(Errno.Ok, fs.SetLk(Root, f, Lock(b, owner: 2, F_WRLCK, 7, 9), wait: false));

        // close(2) of any descriptor of owner 1 (FLUSH with its lock owner) drops all its locks
        Assert.Equal(Errno.Ok, fs.Flush(Root, f, new FlushIn { Fh = a2, LockOwner = 1 }));
        Assert.Equal(Errno.Ok, fs.SetLk(Root, f, Lock(b, owner: 2, F_WRLCK, 0, 4), wait: false));

        // unlock, then the first owner can lock again
        Assert.Equal(Errno.Ok, fs.SetLk(Root, f, Lock(b, owner: 2, F_UNLCK, 0, OffsetMax), wait: false));
        Assert.Equal(Errno.Ok, fs.SetLk(Root, f, Lock(a1, owner: 1, F_WRLCK), wait: true));

        // a write lock needs a handle open for writing, as fcntl(2)
        var ro = share.OpenFile(f, 0);
        Assert.Equal(Errno.EBADF, fs.SetLk(Root, f, Lock(ro, owner: 3, F_WRLCK), wait: false));
    }

    [Fact]
    public async Task SetLkW_WaitsUntilTheConflictingOwnerReleases()
    {
        using var share = new TestShare();
        File.WriteAllText(share.HostPath("f"), "x");
        var f = share.Walk("f");
        var fs = share.Fs;
        var a = share.OpenFile(f, 2);
        var b = share.OpenFile(f, 2);
        Assert.Equal(Errno.Ok, fs.SetLk(Root, f, Lock(a, 1, F_WRLCK), wait: false));
        var waiter = Task.Run(() => fs.SetLk(Root, f, Lock(b, 2, F_WRLCK), wait: true));
        Assert.NotSame(waiter, await Task.WhenAny(waiter, Task.Delay(300)));
        Assert.Equal(Errno.Ok, fs.Release(Root, f, new ReleaseIn { Fh = a, LockOwner = 1 }));
        Assert.Same(waiter, await Task.WhenAny(waiter, Task.Delay(5000)));
        Assert.Equal(Errno.Ok, await waiter);
    }

    [Fact]
    public void Flock_LocksBelongToTheOpenFile()
    {
        using var share = new TestShare();
        File.WriteAllText(share.HostPath("f"), "x");
        var f = share.Walk("f");
        var fs = share.Fs;
        var a = share.OpenFile(f, 0);
        var b = share.OpenFile(f, 0);
        LkIn Flock(ulong fh, uint type) => new() { Fh = fh, Owner = 9, Lk = new FileLock { Type = type }, LkFlags = FuseConstants.LkFlock };
        Assert.Equal(Errno.Ok, fs.SetLk(Root, f, Flock(a, F_WRLCK), wait: false));
        Assert.Equal(Errno.EAGAIN, fs.SetLk(Root, f, Flock(b, F_RDLCK), wait: false));
        Assert.Equal(Errno.Ok, fs.SetLk(Root, f, Flock(a, F_UNLCK), wait: false));
        Assert.Equal(Errno.Ok, fs.SetLk(Root, f, Flock(b, F_RDLCK), wait: false));
    }

    [Fact]
    public void Rename_SupportsNoReplaceAndExchange()
    {
        using var share = new TestShare();
        File.WriteAllText(share.HostPath("a"), "A");
        File.WriteAllText(share.HostPath("b"), "B");
        Directory.CreateDirectory(share.HostPath("d"));
        var d = share.Walk("d");
        var fs = share.Fs;
        Assert.Equal(Errno.EEXIST, fs.Rename(Root, NodeId.Root, N("a"), NodeId.Root, N("b"), FuseConstants.RenameNoReplace));
        Assert.Equal(Errno.Ok, fs.Rename(Root, NodeId.Root, N("a"), NodeId.Root, N("b"), FuseConstants.RenameExchange));
        Assert.Equal("B", File.ReadAllText(share.HostPath("a")));
        Assert.Equal("A", File.ReadAllText(share.HostPath("b")));
        Assert.Equal(Errno.Ok, fs.Rename(Root, NodeId.Root, N("a"), d, N("moved"), 0));
        Assert.Equal("B", File.ReadAllText(share.HostPath("d/moved")));
        Assert.Equal(Errno.EINVAL, fs.Rename(Root, NodeId.Root, N("b"), d, N("x"), 0x80));
        Assert.Equal(Errno.ENOENT, fs.Rename(Root, NodeId.Root, N("missing"), d, N("x"), 0));
        // a node keeps working after its name moved
        var moved = share.Walk("d/moved");
        Assert.Equal(Errno.Ok, fs.Rename(Root, d, N("moved"), NodeId.Root, N("back"), 0));
        Assert.Equal(1ul, fs.GetAttr(Root, moved, null).Value.Attr.Size);
    }

    [Fact]
    [Trait("Category", "Root")] // lchown to another user needs CAP_CHOWN
    public void SetAttr_ChangesModeSizeAndTimes_ByNodeAndByHandle()
    {
        using var share = new TestShare();
        File.WriteAllText(share.HostPath("f"), "0123456789");
        var f = share.Walk("f");
        var fs = share.Fs;
        var r = fs.SetAttr(Root, f, new SetAttrIn { Valid = (uint)SetAttrValid.Mode, Mode = 0x8000 | 0x180 });
        Assert.Equal(0x8180u, r.Value.Attr.Mode);
        r = fs.SetAttr(Root, f, new SetAttrIn { Valid = (uint)SetAttrValid.Size, Size = 4 });
        Assert.Equal(4ul, r.Value.Attr.Size);
        Assert.Equal("0123", File.ReadAllText(share.HostPath("f")));
        var fh = share.OpenFile(f, 2);
        r = fs.SetAttr(Root, f, new SetAttrIn { Valid = (uint)(SetAttrValid.Size | SetAttrValid.Fh), Fh = fh, Size = 2 });
        Assert.Equal(2ul, r.Value.Attr.Size);
        r = fs.SetAttr(Root, f, new SetAttrIn { Valid = (uint)(SetAttrValid.ATime | SetAttrValid.MTime), Atime = 1000, Atimensec = 5, Mtime = 2000, Mtimensec = 7 });
        Assert.Equal((1000ul, 5u, 2000ul, 7u), (r.Value.Attr.Atime, r.Value.Attr.Atimensec, r.Value.Attr.Mtime, r.Value.Attr.Mtimensec));
        r = fs.SetAttr(Root, f, new SetAttrIn { Valid = (uint)(SetAttrValid.MTime | SetAttrValid.MTimeNow | SetAttrValid.Fh), Fh = fh });
        Assert.True(r.Value.Attr.Mtime > 2000);
        Assert.Equal(1000ul, r.Value.Attr.Atime); // atime omitted
        Assert.Equal(Errno.EBADF, fs.SetAttr(Root, f, new SetAttrIn { Valid = (uint)(SetAttrValid.Size | SetAttrValid.Fh), Fh = 999, Size = 0 }).Error);
        Assert.Equal(Errno.EISDIR, fs.SetAttr(Root, NodeId.Root, new SetAttrIn { Valid = (uint)SetAttrValid.Size, Size = 0 }).Error);
        // symlinks: lchown and times act on the link itself
        File.CreateSymbolicLink(share.HostPath("l"), "f");
        var l = share.Walk("l");
        r = fs.SetAttr(Root, l, new SetAttrIn { Valid = (uint)(SetAttrValid.Uid | SetAttrValid.Gid), Uid = 55, Gid = 66 });
        Assert.Equal((55u, 66u), (r.Value.Attr.Uid, r.Value.Attr.Gid));
        Assert.Equal(0u, Host.Stat(share.HostPath("f")).Uid);
    }

    [Fact]
    public void SparseFiles_FallocateLseekAndCopyFileRange()
    {
        using var share = new TestShare();
        var fs = share.Fs;
        var created = fs.Create(Root, NodeId.Root, N("sparse"), new CreateIn { Flags = 2, Mode = 0x1A4 }).Value;
        var f = new NodeId(created.Entry.Nodeid);
        var fh = created.Open.Fh;
        var block = new byte[1 << 16];
        Array.Fill(block, (byte)'z');
        Assert.Equal((uint)block.Length, fs.Write(Root, f, new WriteIn { Fh = fh, Offset = 1 << 20, Size = (uint)block.Length }, block).Value);
        // data starts at 1 MiB, a hole before it
        Assert.Equal(1ul << 20, fs.LSeek(Root, f, new LSeekIn { Fh = fh, Offset = 0, Whence = 3 }).Value);
        Assert.Equal(0ul, fs.LSeek(Root, f, new LSeekIn { Fh = fh, Offset = 0, Whence = 4 }).Value);
        Assert.Equal(Errno.ENXIO, fs.LSeek(Root, f, new LSeekIn { Fh = fh, Offset = 4 << 20, Whence = 3 }).Error);
        Assert.Equal(Errno.EINVAL, fs.LSeek(Root, f, new LSeekIn { Fh = fh, Offset = 0, Whence = 9 }).Error);
        // punch a hole in the data, size unchanged
        Assert.Equal(Errno.Ok, fs.FAllocate(Root, f, new FAllocateIn { Fh = fh, Offset = 1 << 20, Length = 1 << 16, Mode = 0x01 | 0x02 }));
        Assert.Equal((ulong)((1 << 20) + (1 << 16)), fs.GetAttr(Root, f, null).Value.Attr.Size);
        var buffer = new byte[16];
        fs.Read(Root, f, new ReadIn { Fh = fh, Offset = 1 << 20, Size = 16 }, buffer);
        Assert.All(buffer, b => Assert.Equal(0, b));
        // plain allocation grows the file
        Assert.Equal(Errno.Ok, fs.FAllocate(Root, f, new FAllocateIn { Fh = fh, Offset = 0, Length = 4 << 20 }));
        Assert.Equal(4ul << 20, fs.GetAttr(Root, f, new FileHandle(fh)).Value.Attr.Size);

        File.WriteAllText(share.HostPath("src"), "copy me please");
        var src = share.Walk("src");
        var sfh = share.OpenFile(src, 0);
        var copy = fs.CopyFileRange(Root, src, new CopyFileRangeIn { FhIn = sfh, OffIn = 5, NodeidOut = f.Value, FhOut = fh, OffOut = 0, Len = 9 });
        Assert.Equal(9ul, copy.Value);
        var head = new byte[9];
        fs.Read(Root, f, new ReadIn { Fh = fh, Offset = 0, Size = 9 }, head);
        Assert.Equal("me please", Encoding.UTF8.GetString(head));
        Assert.Equal(Errno.EBADF, fs.CopyFileRange(Root, src, new CopyFileRangeIn { FhIn = sfh, NodeidOut = f.Value, FhOut = sfh, Len = 1 }).Error);
        Assert.Equal(Errno.Ok, fs.FSync(Root, f, new FSyncIn { Fh = fh, FsyncFlags = FuseConstants.FSyncFDataSync }));
        Assert.Equal(Errno.Ok, fs.FSync(Root, f, new FSyncIn { Fh = fh }));
        Assert.Equal(Errno.Ok, fs.SyncFs(Root, NodeId.Root));
    }

    [Fact]
    public void Create_Open_Truncate_Append_Exclusive()
    {
        using var share = new TestShare();
        var fs = share.Fs;
        const uint O_WRONLY = 1, O_RDWR = 2, O_EXCL = 0x80, O_TRUNC = 0x200, O_APPEND = 0x400;
        File.WriteAllText(share.HostPath("f"), "existing");
        Assert.Equal(Errno.EEXIST, fs.Create(Root, NodeId.Root, N("f"), new CreateIn { Flags = O_WRONLY | O_EXCL, Mode = 0x1A4 }).Error);
        // CREATE of an existing regular file without O_EXCL opens it (the kernel may race with another creator)
        var c = fs.Create(Root, NodeId.Root, N("f"), new CreateIn { Flags = O_RDWR, Mode = 0x1A4 });
        Assert.True(c.IsOk, c.ToString());
        var f = new NodeId(c.Value.Entry.Nodeid);
        Assert.Equal("existing", Encoding.UTF8.GetString(share.ReadAll(f, c.Value.Open.Fh)));

        var t = fs.Open(Root, f, new OpenIn { Flags = O_WRONLY | O_TRUNC });
        Assert.True(t.IsOk);
        Assert.Equal(0L, new FileInfo(share.HostPath("f")).Length);
        var a = fs.Open(Root, f, new OpenIn { Flags = O_WRONLY | O_APPEND }).Value.Fh;
        fs.Write(Root, f, new WriteIn { Fh = a, Offset = 0, Size = 3 }, "abc"u8);
        fs.Write(Root, f, new WriteIn { Fh = a, Offset = 0, Size = 3 }, "def"u8);
        Assert.Equal("abcdef", File.ReadAllText(share.HostPath("f")));
        Assert.Equal(Errno.EINVAL, fs.Open(Root, f, new OpenIn { Flags = 3 }).Error);

        var st = fs.StatFs(Root, NodeId.Root);
        Assert.True(st.IsOk);
        Assert.Equal(255u, st.Value.Namelen);
        Assert.True(st.Value.Blocks > 0 && st.Value.Bsize > 0);
    }
}
