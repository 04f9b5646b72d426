using Hypervisor.Protocol.Fuse;
using static Hypervisor.Passthrough.Tests.FileSystem.TestShare;

namespace Hypervisor.Passthrough.Tests.FileSystem;

public sealed partial class PassthroughFileSystemTests
{
    [Fact]
    [Trait("Category", "Root")]
    public void CreatedInodes_BelongToTheCaller()
    {
        Assert.True(Host.IsRoot, "this test switches fsuid and needs root");
        using var share = new TestShare();
        Assert.Equal(0, Host.chmod(share.Dir, 0x1FF)); // 0777: the caller may create here
        var ctx = As(1234, 5678);
        var file = share.Fs.Create(ctx, NodeId.Root, N("file"), new CreateIn { Flags = 1, Mode = 0x1A4 });
        Assert.True(file.IsOk, file.ToString());
        Assert.Equal((1234u, 5678u), (file.Value.Entry.Attr.Uid, file.Value.Entry.Attr.Gid));
        var dir = share.Fs.MkDir(ctx, NodeId.Root, N("dir"), new MkDirIn { Mode = 0x1ED });
        Assert.True(dir.IsOk, dir.ToString());
        var link = share.Fs.Symlink(ctx, NodeId.Root, N("link"), N("file"));
        Assert.True(link.IsOk, link.ToString());
        var fifo = share.Fs.MkNod(ctx, NodeId.Root, N("fifo"), new MkNodIn { Mode = 0x1000 | 0x1A4 });
        Assert.True(fifo.IsOk, fifo.ToString());
        foreach (var name in new[] { "file", "dir", "link", "fifo" })
        {
            var st = Host.Stat(share.HostPath(name));
            Assert.Equal((1234u, 5678u), (st.Uid, st.Gid));
        }
        // The guest kernel applied the umask already: the mode arrives exactly as sent.
        Assert.Equal(0x1A4u, Host.Stat(share.HostPath("file")).Mode & 0xFFF);
        Assert.Equal(0x1EDu, Host.Stat(share.HostPath("dir")).Mode & 0xFFF);
        // The daemon thread is root again afterwards.
        var after = share.Fs.MkDir(Root, NodeId.Root, N("rootdir"), new MkDirIn { Mode = 0x1ED });
        Assert.Equal((0u, 0u), (after.Value.Attr.Uid, after.Value.Attr.Gid));
        // An unprivileged caller may not make device nodes (CAP_MKNOD is dropped with the fsuid), root may.
        Assert.Equal(Errno.EPERM, share.Fs.MkNod(ctx, NodeId.Root, N("null"), new MkNodIn { Mode = 0x2000 | 0x1B6, Rdev = (1 << 8) | 3 }).Error);
    }

    [Fact]
    [Trait("Category", "Root")]
    public void SetgidDirectory_GivesItsGroupToNewInodes()
    {
        Assert.True(Host.IsRoot, "this test switches fsuid and needs root");
        using var share = new TestShare();
        Directory.CreateDirectory(share.HostPath("g"));
        Assert.Equal(0, Host.chown(share.HostPath("g"), 0, 777));
        Assert.Equal(0, Host.chmod(share.HostPath("g"), 0x400 | 0x1FF)); // g+s, 0777
        var g = share.Walk("g");
        var ctx = As(1234, 5678);
        var file = share.Fs.Create(ctx, g, N("f"), new CreateIn { Flags = 1, Mode = 0x1A4 });
        Assert.True(file.IsOk, file.ToString());
        Assert.Equal((1234u, 777u), (file.Value.Entry.Attr.Uid, file.Value.Entry.Attr.Gid));
        var sub = share.Fs.MkDir(ctx, g, N("sub"), new MkDirIn { Mode = 0x1ED });
        Assert.Equal(777u, sub.Value.Attr.Gid);
        Assert.NotEqual(0u, sub.Value.Attr.Mode & 0x400); // directories inherit the setgid bit
    }

    [Fact]
    [Trait("Category", "Root")]
    public void UnprivilegedCaller_CannotCreateInADirectoryItMayNotWrite()
    {
        Assert.True(Host.IsRoot, "this test switches fsuid and needs root");
        using var share = new TestShare();
        Assert.Equal(0, Host.chmod(share.Dir, 0x1ED)); // 0755 root-owned
        Assert.Equal(Errno.EACCES, share.Fs.Create(As(1234, 5678), NodeId.Root, N("f"), new CreateIn { Flags = 1, Mode = 0x1A4 }).Error);
        Assert.Equal(Errno.EACCES, share.Fs.MkDir(As(1234, 5678), NodeId.Root, N("d"), new MkDirIn { Mode = 0x1ED }).Error);
        Assert.True(share.Fs.MkDir(Root, NodeId.Root, N("d"), new MkDirIn { Mode = 0x1ED }).IsOk);
        // ACCESS with the caller's identity
        File.WriteAllText(share.HostPath("mine"), "");
        Assert.Equal(0, Host.chmod(share.HostPath("mine"), 0x180)); // 0600 root
        var mine = share.Walk("mine");
        Assert.Equal(Errno.EACCES, share.Fs.Access(As(1234, 5678), mine, 4));
        Assert.Equal(Errno.Ok, share.Fs.Access(Root, mine, 4 | 2));
        Assert.Equal(Errno.Ok, share.Fs.Access(As(1234, 5678), mine, 0));
    }

    [Fact]
    [Trait("Category", "Root")]
    public void WriteByUnprivilegedCaller_ClearsSetuidAndSetgid()
    {
        Assert.True(Host.IsRoot, "this test chowns files and needs root");
        using var share = new TestShare();
        var path = share.HostPath("suid");
        File.WriteAllText(path, "#!/bin/sh\n");
        Assert.Equal(0, Host.chown(path, 1234, 5678));
        Assert.Equal(0, Host.chmod(path, 0x800 | 0x400 | 0x1ED)); // 06755
        var node = share.Walk("suid");
        var fh = share.OpenFile(node, 2);
        Assert.True((share.Fs.Negotiated & InitFlags.HandleKillPrivV2) != 0);

        // a write without the flag (a privileged writer in the guest) keeps the bits
        Assert.Equal(1u, share.Fs.Write(As(1234, 5678), node, new WriteIn { Fh = fh, Offset = 0, Size = 1 }, "#"u8).Value);
        Assert.Equal(0xDEDu, Host.Stat(path).Mode & 0xFFF);

        // FUSE_WRITE_KILL_SUIDGID: as a local write by an unprivileged user, both bits go (group-executable file)
        var w = share.Fs.Write(As(1234, 5678), node, new WriteIn { Fh = fh, Offset = 0, Size = 1, WriteFlags = FuseConstants.WriteKillSuidGid }, "#"u8);
        Assert.Equal(1u, w.Value);
        Assert.Equal(0x1EDu, Host.Stat(path).Mode & 0xFFF);

        // truncate with FATTR_KILL_SUIDGID
        Assert.Equal(0, Host.chmod(path, 0x800 | 0x1ED));
        var t = share.Fs.SetAttr(As(1234, 5678), node, new SetAttrIn { Valid = (uint)(SetAttrValid.Size | SetAttrValid.KillSuidGid), Size = 1 });
        Assert.True(t.IsOk, t.ToString());
        Assert.Equal(0x1EDu, t.Value.Attr.Mode & 0xFFF);
        Assert.Equal(1ul, t.Value.Attr.Size);

        // chown clears them as the kernel does for a local chown
        Assert.Equal(0, Host.chmod(path, 0x800 | 0x1ED));
        var c = share.Fs.SetAttr(Root, node, new SetAttrIn { Valid = (uint)SetAttrValid.Uid, Uid = 4321 });
        Assert.Equal(4321u, c.Value.Attr.Uid);
        Assert.Equal(0x1EDu, c.Value.Attr.Mode & 0xFFF);
    }
}
