using System.Text;
using Hypervisor.Interop;
using Hypervisor.Protocol.Fuse;
using static Hypervisor.Passthrough.Tests.FileSystem.TestShare;

namespace Hypervisor.Passthrough.Tests.FileSystem;

// --xattrmap and --posix-acl on the filesystem: names mapped on the way to the host and back, POSIX ACL inheritance and
// the umask under DONT_MASK, SETXATTR_ACL_KILL_SGID. Runs as root (trusted.* on the host, chown).
public sealed partial class PassthroughFileSystemTests
{
    private const string AclAccess = "system.posix_acl_access";
    private const string AclDefault = "system.posix_acl_default";

    private static string? HostXattr(string path, string name)
    {
        var buffer = new byte[4096];
        var n = Libc.getxattr(Encoding.UTF8.GetBytes(path + "\0"), Encoding.UTF8.GetBytes(name + "\0"), buffer, (nuint)buffer.Length);
        return n < 0 ? null : Encoding.UTF8.GetString(buffer, 0, (int)n);
    }

    private static void SetHostXattr(string path, string name, ReadOnlySpan<byte> value) =>
        Assert.Equal(0, Libc.setxattr(Encoding.UTF8.GetBytes(path + "\0"), Encoding.UTF8.GetBytes(name + "\0"), value, (nuint)value.Length, 0));

    /// <summary>The kernel's binary POSIX ACL (posix_acl_xattr.h) for entries (tag, perm, id): tags 1 user_obj, 2 user, 4 group_obj, 8 group, 0x10 mask, 0x20 other.</summary>
    private static byte[] Acl(params (ushort Tag, ushort Perm, uint Id)[] entries)
    {
        var bytes = new byte[4 + 8 * entries.Length];
        BitConverter.TryWriteBytes(bytes.AsSpan(0), 2u);
        for (var i = 0; i < entries.Length; i++)
        {
            BitConverter.TryWriteBytes(bytes.AsSpan(4 + 8 * i), entries[i].Tag);
            BitConverter.TryWriteBytes(bytes.AsSpan(6 + 8 * i), entries[i].Perm);
            BitConverter.TryWriteBytes(bytes.AsSpan(8 + 8 * i), entries[i].Id);
        }
        return bytes;
    }

    private static string List(TestShare share, NodeId node)
    {
        var size = share.Fs.ListXAttr(Root, node, Span<byte>.Empty);
        Assert.True(size.IsOk, size.ToString());
        var list = new byte[size.Value];
        Assert.Equal(size.Value, share.Fs.ListXAttr(Root, node, list).Value);
        return string.Join(",", Encoding.UTF8.GetString(list).Split('\0', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void XattrMap_MapsGuestNamesToHostNames_AndListingsBack_RefusingUnmatchedNames()
    {
        // No terminating rule: a guest name that neither rule matches is refused, a host name that neither matches is hidden.
        using var share = new TestShare(o => o.Xattrmap = ":prefix:all:trusted.:user.virtiofs.: :ok:all:user.:user.:");
        var path = share.HostPath("f");
        File.WriteAllText(path, "");
        SetHostXattr(path, "trusted.hostonly", "h"u8);
        var node = share.Walk("f");
        Assert.True((share.Fs.Negotiated & InitFlags.SetXAttrExt) != 0, "xattrmap implies xattr");

        Assert.Equal(Errno.Ok, share.Fs.SetXAttr(Root, node, N("trusted.t"), "tv"u8, new SetXAttrIn { Size = 2 }));
        Assert.Equal(Errno.Ok, share.Fs.SetXAttr(Root, node, N("user.u"), "uv"u8, new SetXAttrIn { Size = 2 }));
        Assert.Equal("tv", HostXattr(path, "user.virtiofs.trusted.t"));
        Assert.Null(HostXattr(path, "trusted.t"));
        Assert.Equal("uv", HostXattr(path, "user.u"));

        Assert.Equal(Errno.EPERM, share.Fs.SetXAttr(Root, node, N("security.x"), "x"u8, new SetXAttrIn { Size = 1 }));
        Assert.Equal(Errno.ENODATA, share.Fs.GetXAttr(Root, node, N("security.x"), new byte[8]).Error); // refused reads as absent
        Assert.Equal(Errno.EPERM, share.Fs.RemoveXAttr(Root, node, N("security.x")));
        Assert.Equal(Errno.ENODATA, share.Fs.GetXAttr(Root, node, N("trusted.hostonly"), new byte[8]).Error);

        Assert.Equal("trusted.t,user.u", List(share, node));
        var value = new byte[8];
        Assert.Equal(2, share.Fs.GetXAttr(Root, node, N("trusted.t"), value).Value);
        Assert.Equal(Errno.ERANGE, share.Fs.ListXAttr(Root, node, new byte[5]).Error);

        Assert.Equal(Errno.Ok, share.Fs.RemoveXAttr(Root, node, N("trusted.t")));
        Assert.Null(HostXattr(path, "user.virtiofs.trusted.t"));
        Assert.Equal("user.u", List(share, node));
        Assert.Equal("h", HostXattr(path, "trusted.hostonly"));
    }

    [Fact]
    public void PosixAcl_NegotiatesAclDontMaskAndSetxattrExt_AndImpliesXattr()
    {
        using var share = new TestShare(o => o.PosixAcl = true);
        var wanted = InitFlags.PosixAcl | InitFlags.DontMask | InitFlags.SetXAttrExt;
        Assert.Equal(wanted, share.Fs.Negotiated & wanted);
        Assert.Equal(InitFlags.None, share.Fs.Init(InitFlags.DontMask) & (InitFlags.DontMask | InitFlags.PosixAcl));
        using var plain = new TestShare();
        Assert.Equal(InitFlags.None, plain.Fs.Negotiated & (wanted | InitFlags.SecurityCtx));
    }

    [Fact]
    public void PosixAcl_UmaskIsAppliedOnlyWhereTheParentHasNoDefaultAcl()
    {
        using var share = new TestShare(o => o.PosixAcl = true);
        Directory.CreateDirectory(share.HostPath("acl"));
        SetHostXattr(share.HostPath("acl"), AclDefault, Acl((1, 7, uint.MaxValue), (4, 7, uint.MaxValue), (0x20, 5, uint.MaxValue)));
        var acl = share.Walk("acl");

        Assert.True(share.Fs.MkDir(Root, NodeId.Root, N("masked"), new MkDirIn { Mode = 0x1FF, Umask = 0x12 }).IsOk); // 0777, umask 022
        Assert.Equal((UnixFileMode)0x1ED, File.GetUnixFileMode(share.HostPath("masked")));                         // 0755
        Assert.True(share.Fs.Create(Root, NodeId.Root, N("masked.txt"), new CreateIn { Flags = (uint)Libc.O_WRONLY, Mode = Libc.S_IFREG | 0x1B6, Umask = 0x3F }).IsOk);
        Assert.Equal((UnixFileMode)0x180, File.GetUnixFileMode(share.HostPath("masked.txt")));                     // 0666 & ~077 = 0600

        Assert.True(share.Fs.MkDir(Root, acl, N("inherits"), new MkDirIn { Mode = 0x1FF, Umask = 0x3F }).IsOk);     // umask 077 ignored
        Assert.Equal((UnixFileMode)0x1FD, File.GetUnixFileMode(share.HostPath("acl/inherits")));                   // 0775 from the ACL
        Assert.NotNull(HostXattr(share.HostPath("acl/inherits"), AclDefault));
        Assert.True(share.Fs.MkNod(Root, acl, N("inherits.txt"), new MkNodIn { Mode = Libc.S_IFREG | 0x1B6, Umask = 0x3F }).IsOk);
        Assert.Equal((UnixFileMode)0x1B4, File.GetUnixFileMode(share.HostPath("acl/inherits.txt")));              // 0664

        // A share without --posix-acl on the same thread: the guest has applied its umask, the daemon applies none.
        using var plain = new TestShare();
        Assert.True(plain.Fs.MkDir(Root, NodeId.Root, N("asis"), new MkDirIn { Mode = 0x1FF, Umask = 0x3F }).IsOk);
        Assert.Equal((UnixFileMode)0x1FF, File.GetUnixFileMode(plain.HostPath("asis")));
    }

    [Fact]
    public void PosixAcl_AclKillSgid_ClearsSetgidForACallerOutsideTheGroup_ButNotForRoot()
    {
        using var share = new TestShare(o => o.PosixAcl = true);
        foreach (var name in new[] { "user", "root" })
        {
            var path = share.HostPath(name);
            File.WriteAllText(path, "");
            using (var chown = System.Diagnostics.Process.Start("chown", ["1000:0", path])) { chown.WaitForExit(); Assert.Equal(0, chown.ExitCode); }
            File.SetUnixFileMode(path, (UnixFileMode)0x5F8); // 02770
        }
        var acl = Acl((1, 6, uint.MaxValue), (4, 6, uint.MaxValue), (0x20, 0, uint.MaxValue));
        var args = new SetXAttrIn { Size = (uint)acl.Length, SetxattrFlags = FuseConstants.SetXAttrAclKillSgid };
        Assert.Equal(Errno.Ok, share.Fs.SetXAttr(As(1000, 1000), share.Walk("user"), N(AclAccess), acl, args));
        Assert.Equal((UnixFileMode)0x1B0, File.GetUnixFileMode(share.HostPath("user")));   // 0660: set-group-ID cleared
        Assert.Equal(Errno.Ok, share.Fs.SetXAttr(Root, share.Walk("root"), N(AclAccess), acl, args));
        Assert.Equal((UnixFileMode)0x5B0, File.GetUnixFileMode(share.HostPath("root")));   // 02660: kept
    }
}
