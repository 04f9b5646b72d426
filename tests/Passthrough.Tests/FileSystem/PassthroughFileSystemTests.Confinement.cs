using System.Text;
using Hypervisor.Protocol.Fuse;
using static Hypervisor.Passthrough.Tests.FileSystem.TestShare;

namespace Hypervisor.Passthrough.Tests.FileSystem;

public sealed partial class PassthroughFileSystemTests
{
    [Fact]
    public void Lookup_DotDotOfRoot_IsRoot_AndDotIsTheDirectoryItself()
    {
        using var share = new TestShare();
        Directory.CreateDirectory(share.HostPath("d"));
        var up = share.Lookup(NodeId.Root, "..");
        Assert.Equal(FuseConstants.RootId, up.Nodeid);
        var d = share.Lookup(NodeId.Root, "d");
        Assert.Equal(d.Nodeid, share.Lookup(new NodeId(d.Nodeid), ".").Nodeid);
        Assert.Equal(FuseConstants.RootId, share.Lookup(new NodeId(d.Nodeid), "..").Nodeid);
        // ".." twice from a subdirectory still stops at the root
        Assert.Equal(FuseConstants.RootId, share.Lookup(new NodeId(share.Lookup(new NodeId(d.Nodeid), "..").Nodeid), "..").Nodeid);
    }

    [Fact]
    public void Names_WithSlashOrEmpty_AreEINVAL_AndTooLong_IsENAMETOOLONG()
    {
        using var share = new TestShare();
        Directory.CreateDirectory(share.HostPath("d"));
        File.WriteAllText(share.HostPath("d/f"), "x");
        Assert.Equal(Errno.EINVAL, share.Fs.Lookup(Root, NodeId.Root, N("d/f")).Error);
        Assert.Equal(Errno.EINVAL, share.Fs.Lookup(Root, NodeId.Root, N("../etc")).Error);
        Assert.Equal(Errno.EINVAL, share.Fs.Lookup(Root, NodeId.Root, N("/etc")).Error);
        Assert.Equal(Errno.EINVAL, share.Fs.Lookup(Root, NodeId.Root, ReadOnlySpan<byte>.Empty).Error);
        Assert.Equal(Errno.EINVAL, share.Fs.MkDir(Root, NodeId.Root, N("a/b"), new MkDirIn { Mode = 0x1ED }).Error);
        Assert.Equal(Errno.EINVAL, share.Fs.Unlink(Root, NodeId.Root, N("d/f")));

        var longName = new string('n', 256);
        var fd = Host.open(share.HostPath(longName), 0x40 | 1, 0x1A4);
        Assert.Equal(-1, fd);
        Assert.Equal(Errno.ENAMETOOLONG.Value, Host.Errno());
        Assert.Equal(Errno.ENAMETOOLONG, share.Fs.Lookup(Root, NodeId.Root, N(longName)).Error);
        Assert.Equal(Errno.ENAMETOOLONG, share.Fs.Create(Root, NodeId.Root, N(longName), new CreateIn { Flags = 1, Mode = 0x1A4 }).Error);
        Assert.True(File.Exists(share.HostPath("d/f")));
    }

    [Fact]
    public void DotNames_GiveTheErrnosOfALocalDirectory()
    {
        using var share = new TestShare();
        Directory.CreateDirectory(share.HostPath("d"));
        var d = share.Walk("d");
        // rmdir(2) on a local directory
        Assert.Equal(-1, Host.rmdir(share.HostPath("d/.")));
        Assert.Equal(Host.Errno(), share.Fs.RmDir(Root, d, N(".")).Value);
        Assert.Equal(-1, Host.rmdir(share.HostPath("d/..")));
        Assert.Equal(Host.Errno(), share.Fs.RmDir(Root, d, N("..")).Value);
        // mkdir(2)
        Assert.Equal(-1, Host.mkdir(share.HostPath("d/.."), 0x1ED));
        Assert.Equal(Host.Errno(), share.Fs.MkDir(Root, d, N(".."), new MkDirIn { Mode = 0x1ED }).Error.Value);
        Assert.Equal(-1, Host.mkdir(share.HostPath("d/."), 0x1ED));
        Assert.Equal(Host.Errno(), share.Fs.MkDir(Root, d, N("."), new MkDirIn { Mode = 0x1ED }).Error.Value);
        // unlink(2)
        Assert.Equal(-1, Host.unlink(share.HostPath("d/.")));
        Assert.Equal(Host.Errno(), share.Fs.Unlink(Root, d, N(".")).Value);
        // rename(2)
        Assert.Equal(-1, Host.rename(share.HostPath("d/."), share.HostPath("d/x")));
        Assert.Equal(Host.Errno(), share.Fs.Rename(Root, d, N("."), d, N("x"), 0).Value);
        // link(2) to "."
        File.WriteAllText(share.HostPath("f"), "x");
        Assert.Equal(-1, Host.link(share.HostPath("f"), share.HostPath("d/.")));
        Assert.Equal(Host.Errno(), share.Fs.Link(Root, share.Walk("f"), d, N(".")).Error.Value);
        // open(2) with O_CREAT
        Assert.Equal(-1, Host.open(share.HostPath("d/."), 0x40 | 1, 0x1A4));
        Assert.Equal(Host.Errno(), share.Fs.Create(Root, d, N("."), new CreateIn { Flags = 1, Mode = 0x1A4 }).Error.Value);
        Assert.True(Directory.Exists(share.HostPath("d")));
    }

    [Fact]
    public void SymlinkPointingOutside_IsNeverFollowed()
    {
        using var share = new TestShare();
        var outside = Path.Combine("/tmp", "pt-fs-outside-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(outside);
        try
        {
            File.WriteAllText(Path.Combine(outside, "secret"), "secret");
            File.CreateSymbolicLink(share.HostPath("esc"), outside);
            File.CreateSymbolicLink(share.HostPath("escfile"), Path.Combine(outside, "secret"));

            var esc = share.Lookup(NodeId.Root, "esc");
            Assert.Equal(Libc_S_IFLNK, esc.Attr.Mode & 0xF000);
            Assert.Equal(Errno.ENOTDIR, share.Fs.Lookup(Root, new NodeId(esc.Nodeid), N("secret")).Error);
            Assert.Equal(Errno.ENOTDIR, share.Fs.OpenDir(Root, new NodeId(esc.Nodeid), new OpenIn()).Error);
            Assert.Equal(Errno.ENOTDIR, share.Fs.Create(Root, new NodeId(esc.Nodeid), N("new"), new CreateIn { Flags = 1, Mode = 0x1A4 }).Error);
            Assert.False(File.Exists(Path.Combine(outside, "new")));

            var escFile = share.Lookup(NodeId.Root, "escfile");
            Assert.Equal(Libc_S_IFLNK, escFile.Attr.Mode & 0xF000);
            Assert.Equal(Errno.ELOOP, share.Fs.Open(Root, new NodeId(escFile.Nodeid), new OpenIn()).Error);
            Assert.Equal(Errno.ELOOP, share.Fs.Open(Root, new NodeId(escFile.Nodeid), new OpenIn { Flags = 2 | 0x200 }).Error);
            Assert.Equal("secret", File.ReadAllText(Path.Combine(outside, "secret")));

            // SETATTR on the symlink: chmod is EOPNOTSUPP as on Linux, truncate never reaches the target
            Assert.Equal(Errno.EOPNOTSUPP, share.Fs.SetAttr(Root, new NodeId(escFile.Nodeid), new SetAttrIn { Valid = 1, Mode = 0x1FF }).Error);
            Assert.Equal(Errno.EINVAL, share.Fs.SetAttr(Root, new NodeId(escFile.Nodeid), new SetAttrIn { Valid = 8, Size = 0 }).Error);
            Assert.Equal("secret", File.ReadAllText(Path.Combine(outside, "secret")));

            var target = new byte[4096];
            var len = share.Fs.ReadLink(Root, new NodeId(escFile.Nodeid), target);
            Assert.Equal(Path.Combine(outside, "secret"), Encoding.UTF8.GetString(target, 0, len.Value));

            // READDIRPLUS describes the link itself
            var dirFh = share.Fs.OpenDir(Root, NodeId.Root, new OpenIn()).Value.Fh;
            var entries = ReadAllEntries(share, NodeId.Root, dirFh, plus: true, 65536);
            Assert.Equal(Libc_S_IFLNK, entries["esc"].Mode & 0xF000);
            Assert.Equal(Libc_S_IFLNK, entries["escfile"].Mode & 0xF000);
        }
        finally
        {
            Directory.Delete(outside, recursive: true);
        }
    }

    [Fact]
    public void Open_OfFifoSocketOrDirectory_FailsWithoutBlocking()
    {
        using var share = new TestShare();
        Assert.Equal(0, Host.mkfifo(share.HostPath("fifo"), 0x1B6));
        Directory.CreateDirectory(share.HostPath("d"));
        var fifo = share.Walk("fifo");
        var started = DateTime.UtcNow;
        Assert.Equal(Errno.ENXIO, share.Fs.Open(Root, fifo, new OpenIn { Flags = 0 }).Error);
        Assert.Equal(Errno.ENXIO, share.Fs.Open(Root, fifo, new OpenIn { Flags = 1 }).Error);
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(10)); // a blocking open would never return
        Assert.Equal(Errno.EISDIR, share.Fs.Open(Root, share.Walk("d"), new OpenIn()).Error);
        // CREATE of an existing FIFO name (no O_EXCL) must not open it either
        Assert.Equal(Errno.ENXIO, share.Fs.Create(Root, NodeId.Root, N("fifo"), new CreateIn { Flags = 1, Mode = 0x1A4 }).Error);
        // MKNOD of a socket: a node, never opened
        var sock = share.Fs.MkNod(Root, NodeId.Root, N("sock"), new MkNodIn { Mode = 0xC000 | 0x1B6 });
        Assert.True(sock.IsOk, sock.ToString());
        Assert.Equal(Errno.ENXIO, share.Fs.Open(Root, new NodeId(sock.Value.Nodeid), new OpenIn()).Error);
    }
}
