using System.Runtime.InteropServices;
using System.Text;
using Hypervisor.Interop;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Passthrough.Tests.FileSystem;
using Hypervisor.Protocol.Fuse;
using static Hypervisor.Passthrough.Tests.FuseFrames;

namespace Hypervisor.Passthrough.Tests.Engine;

/// <summary>
/// <c>--security-label</c> through the engine and the passthrough filesystem, with the frames a guest kernel sends once
/// FUSE_SECURITY_CTX is agreed: from protocol 7.38 the context is an extension at the end of the frame
/// (<c>total_extlen</c>), before that the argument after the names (Linux 6.1 guests). A CREATE, MKDIR, MKNOD or SYMLINK
/// carrying a context makes the entry with that xattr on the host; one whose label cannot be set leaves no entry.
/// Runs as root (security.* xattrs need CAP_SYS_ADMIN on a host without an LSM that owns the name).
/// </summary>
public sealed class SecurityLabelTests
{
    private const string Selinux = "security.selinux";
    private const string Context = "system_u:object_r:container_file_t:s0";

    private static (TestShare Share, RawFuseClient Client) Start(uint minor = 38, bool securityLabel = true)
    {
        var share = new TestShare(o => (o.SecurityLabel, o.Xattr) = (securityLabel, true));
        var client = new RawFuseClient(new FuseEngine(share.Fs));
        var init = client.Raw(Init(minor, InitFlags.InitExt | InitFlags.SecurityCtx | InitFlags.SetXAttrExt | InitFlags.MaxPages | InitFlags.BigWrites, 1));
        Assert.True(init.Ok, init.ToString());
        Assert.Equal(securityLabel, (((ulong)init.As<InitOut>().Flags2 << 32) & (ulong)InitFlags.SecurityCtx) != 0);
        return (share, client);
    }

    /// <summary>A <c>fuse_secctx_header</c> with one context (or none when <paramref name="name"/> is null), padded to 8 bytes.</summary>
    private static byte[] SecCtx(string? name, string value, int countOverride = -1)
    {
        if (name is null) return Struct(new SecctxHeader { Size = 8, NrSecctx = 0 });
        var valueBytes = Encoding.UTF8.GetBytes(value + "\0");
        var body = Concat(Struct(new Secctx { Size = (uint)valueBytes.Length }), Name(name), valueBytes);
        var padded = new byte[(body.Length + 7) & ~7];
        body.CopyTo(padded, 0);
        var header = new SecctxHeader { Size = (uint)(8 + padded.Length), NrSecctx = countOverride < 0 ? 1u : (uint)countOverride };
        return Concat(Struct(header), padded);
    }

    /// <summary>A request whose last <paramref name="extensions"/> bytes are its extension area (total_extlen in 8-byte units).</summary>
    private static byte[] WithExtensions(FuseOpcode opcode, ulong node, byte[] body, byte[] extensions)
    {
        var frame = Build(opcode, 500, node, Concat(body, extensions));
        var header = MemoryMarshal.Read<InHeader>(frame);
        header.TotalExtlen = (ushort)(extensions.Length / 8);
        MemoryMarshal.Write(frame, in header);
        return frame;
    }

    private static string? HostXattr(string path, string name)
    {
        var buffer = new byte[256];
        var n = Libc.getxattr(Encoding.UTF8.GetBytes(path + "\0"), Encoding.UTF8.GetBytes(name + "\0"), buffer, (nuint)buffer.Length);
        return n < 0 ? null : Encoding.UTF8.GetString(buffer, 0, (int)n);
    }

    [Fact]
    public void Create_WithAContextExtension_MakesTheFileWithThatXattr()
    {
        var (share, client) = Start();
        using (share)
        {
            var create = new CreateIn { Flags = (uint)Libc.O_WRONLY, Mode = Libc.S_IFREG | 0x1A4 };
            var reply = client.Raw(WithExtensions(FuseOpcode.Create, 1, Concat(Struct(create), Name("labelled")), SecCtx(Selinux, Context)));
            Assert.True(reply.Ok, reply.ToString());
            Assert.Equal(Context + "\0", HostXattr(share.HostPath("labelled"), Selinux));
        }
    }

    [Fact]
    public void MkDir_MkNod_AndSymlink_WithAContextExtension_AreLabelled()
    {
        var (share, client) = Start();
        using (share)
        {
            var mkdir = client.Raw(WithExtensions(FuseOpcode.MkDir, 1, Concat(Struct(new MkDirIn { Mode = 0x1ED }), Name("dir")), SecCtx(Selinux, Context)));
            Assert.True(mkdir.Ok, mkdir.ToString());
            Assert.Equal(Context + "\0", HostXattr(share.HostPath("dir"), Selinux));

            var mknod = client.Raw(WithExtensions(FuseOpcode.MkNod, 1, Concat(Struct(new MkNodIn { Mode = Libc.S_IFIFO | 0x1A4 }), Name("fifo")), SecCtx(Selinux, Context)));
            Assert.True(mknod.Ok, mknod.ToString());
            Assert.Equal(Context + "\0", HostXattr(share.HostPath("fifo"), Selinux));

            var symlink = client.Raw(WithExtensions(FuseOpcode.Symlink, 1, Concat(Name("link"), Name("dir")), SecCtx(Selinux, "link_t")));
            Assert.True(symlink.Ok, symlink.ToString());
            // The link itself carries the label (read through the daemon, which reaches the link, not its target).
            var get = client.Send(FuseOpcode.GetXAttr, symlink.As<EntryOut>().Nodeid, Struct(new GetXAttrIn { Size = 64 }), Name(Selinux));
            Assert.True(get.Ok, get.ToString());
            Assert.Equal("link_t\0", Encoding.UTF8.GetString(get.Payload));
            Assert.Equal(Context + "\0", HostXattr(share.HostPath("link"), Selinux)); // following it: the directory's
        }
    }

    [Fact]
    public void Before738_TheContextIsTheArgumentAfterTheNames()
    {
        var (share, client) = Start(minor: 37);
        using (share)
        {
            var mkdir = client.Send(FuseOpcode.MkDir, 1, Struct(new MkDirIn { Mode = 0x1ED }), Name("old"), SecCtx(Selinux, Context));
            Assert.True(mkdir.Ok, mkdir.ToString());
            Assert.Equal(Context + "\0", HostXattr(share.HostPath("old"), Selinux));
            var create = client.Send(FuseOpcode.Create, 1, Struct(new CreateIn { Flags = (uint)Libc.O_WRONLY, Mode = Libc.S_IFREG | 0x1A4 }), Name("oldfile"), SecCtx(Selinux, "f_t"));
            Assert.True(create.Ok, create.ToString());
            Assert.Equal("f_t\0", HostXattr(share.HostPath("oldfile"), Selinux));
        }
    }

    [Fact]
    public void NoContext_CreatesAnUnlabelledFile()
    {
        var (share, client) = Start();
        using (share)
        {
            var create = client.Raw(WithExtensions(FuseOpcode.Create, 1, Concat(Struct(new CreateIn { Flags = (uint)Libc.O_WRONLY, Mode = Libc.S_IFREG | 0x1A4 }), Name("plain")), SecCtx(null, "")));
            Assert.True(create.Ok, create.ToString());
            Assert.True(File.Exists(share.HostPath("plain")));
            Assert.Null(HostXattr(share.HostPath("plain"), Selinux));
        }
    }

    [Fact]
    public void ALabelThatCannotBeSet_LeavesNoFile_AndTheErrorGoesBack()
    {
        var (share, client) = Start();
        using (share)
        {
            // No host filesystem has an "other." namespace: setting it fails with EOPNOTSUPP after the entry exists.
            var create = client.Raw(WithExtensions(FuseOpcode.Create, 1, Concat(Struct(new CreateIn { Flags = (uint)Libc.O_WRONLY, Mode = Libc.S_IFREG | 0x1A4 }), Name("f")), SecCtx("other.label", "x")));
            Assert.Equal(-Errno.EOPNOTSUPP.Value, create.Error);
            var mkdir = client.Raw(WithExtensions(FuseOpcode.MkDir, 1, Concat(Struct(new MkDirIn { Mode = 0x1ED }), Name("d")), SecCtx("other.label", "x")));
            Assert.Equal(-Errno.EOPNOTSUPP.Value, mkdir.Error);
            var symlink = client.Raw(WithExtensions(FuseOpcode.Symlink, 1, Concat(Name("l"), Name("f")), SecCtx("other.label", "x")));
            Assert.Equal(-Errno.EOPNOTSUPP.Value, symlink.Error);
            Assert.Empty(Directory.EnumerateFileSystemEntries(share.Dir));
            Assert.Equal(-Errno.ENOENT.Value, client.Lookup(1, "f").Error);
        }
    }

    [Fact]
    public void AnExistingFileOpenedByCreate_KeepsItsLabel_AndIsNotRemovedWhenLabellingWouldFail()
    {
        var (share, client) = Start();
        using (share)
        {
            File.WriteAllText(share.HostPath("there"), "keep");
            var create = client.Raw(WithExtensions(FuseOpcode.Create, 1, Concat(Struct(new CreateIn { Flags = (uint)Libc.O_WRONLY, Mode = Libc.S_IFREG | 0x1A4 }), Name("there")), SecCtx("other.label", "x")));
            Assert.True(create.Ok, create.ToString());
            Assert.Equal("keep", File.ReadAllText(share.HostPath("there")));
        }
    }

    [Fact]
    public void MalformedContexts_AreRefusedAsMalformed_AndCreateNothing()
    {
        var (share, client) = Start();
        using (share)
        {
            var body = Concat(Struct(new MkDirIn { Mode = 0x1ED }), Name("d"));
            var tooLong = SecCtx(Selinux, Context);
            BitConverter.TryWriteBytes(tooLong.AsSpan(0, 4), (uint)tooLong.Length + 8); // size past the area
            Assert.Equal(-Errno.EINVAL.Value, client.Raw(WithExtensions(FuseOpcode.MkDir, 1, body, tooLong)).Error);
            Assert.Equal(-Errno.EINVAL.Value, client.Raw(WithExtensions(FuseOpcode.MkDir, 1, body, SecCtx(Selinux, Context, countOverride: 2))).Error);
            var valueTooLong = SecCtx(Selinux, Context);
            BitConverter.TryWriteBytes(valueTooLong.AsSpan(8, 4), 4096u);
            Assert.Equal(-Errno.EINVAL.Value, client.Raw(WithExtensions(FuseOpcode.MkDir, 1, body, valueTooLong)).Error);
            Assert.Empty(Directory.EnumerateFileSystemEntries(share.Dir));
            Assert.True(client.GetAttr(1).Ok);
        }
    }

    [Fact]
    public void WithoutTheOption_SecurityCtxIsNotAgreed_AndCreatesCarryNoLabel()
    {
        var (share, client) = Start(securityLabel: false);
        using (share)
        {
            Assert.Equal(InitFlags.None, share.Fs.Negotiated & InitFlags.SecurityCtx);
            var create = client.Send(FuseOpcode.Create, 1, Struct(new CreateIn { Flags = (uint)Libc.O_WRONLY, Mode = Libc.S_IFREG | 0x1A4 }), Name("f"));
            Assert.True(create.Ok, create.ToString());
            Assert.Null(HostXattr(share.HostPath("f"), Selinux));
        }
    }
}
