using Hypervisor.Passthrough.Engine;
using Hypervisor.Interop;
using Hypervisor.Protocol.Fuse;

namespace Hypervisor.Passthrough.FileSystem;

public sealed partial class PassthroughFileSystem
{
    private const int XattrNameMax = 255;
    private const int XattrSizeMax = 65536;

    /// <inheritdoc/>
    public Result<KStatFs> StatFs(in FuseContext ctx, NodeId node)
    {
        var err = Acquire(node, out _, out var lease);
        if (err.IsError) return err;
        using (lease)
        {
            if (Libc.fstatvfs(lease.Fd, out var st) != 0) return LastErrno();
            return new KStatFs
            {
                Blocks = st.Blocks,
                Bfree = st.Bfree,
                Bavail = st.Bavail,
                Files = st.Files,
                Ffree = st.Ffree,
                Bsize = (uint)st.Bsize,
                Namelen = (uint)st.Namemax,
                Frsize = (uint)st.Frsize,
            };
        }
    }

    /// <inheritdoc/>
    public Errno Access(in FuseContext ctx, NodeId node, uint mask)
    {
        const uint W_OK = 2;
        if ((mask & ~7u) != 0) return Errno.EINVAL;
        var err = Acquire(node, out var n, out var lease);
        if (err.IsError) return err;
        using (lease)
        {
            if (ReadOnly && (mask & W_OK) != 0 && (n!.IsRegular || n.IsDir || n.IsSymlink)) return Errno.EROFS;
            Span<byte> procBuffer = stackalloc byte[ProcPath.Size];
            var proc = ProcPath.Format(lease.Fd.Value, procBuffer);
            // AT_EACCESS checks with the effective (here: fs) identity, which is the caller's while switched.
            var result = Errno.Ok;
            // A caller whose ids a forbid-guest rule covers cannot act on the host at all: no access.
            if (AsCaller(ctx, out var credentials).IsError) return Errno.EACCES;
            using (credentials)
            {
                if (Libc.faccessat(Libc.AT_FDCWD, proc, (int)mask, Libc.AT_EACCESS) != 0) result = LastErrno();
            }
            return result;
        }
    }

    /// <inheritdoc/>
    public Errno SyncFs(in FuseContext ctx, NodeId node) =>
        Libc.syncfs(_mountFd) == 0 ? Errno.Ok : LastErrno();

    // ---- extended attributes: ENOSYS unless --xattr, as virtiofsd answers (the guest then stops asking) ----

    private static Errno CheckXattrName(ReadOnlySpan<byte> name)
    {
        if (name.IsEmpty) return Errno.ERANGE;
        if (name.Length > XattrNameMax) return Errno.ERANGE;
        return name.IndexOf((byte)0) >= 0 ? Errno.EINVAL : Errno.Ok;
    }

    /// <inheritdoc/>
    public Result<int> GetXAttr(in FuseContext ctx, NodeId node, ReadOnlySpan<byte> name, Span<byte> destination) =>
        XAttr(node, FuseOpcode.GetXAttr, name, destination, default, 0);

    /// <inheritdoc/>
    public Result<int> ListXAttr(in FuseContext ctx, NodeId node, Span<byte> destination) =>
        XAttr(node, FuseOpcode.ListXAttr, default, destination, default, 0);

    /// <inheritdoc/>
    public Errno SetXAttr(in FuseContext ctx, NodeId node, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, in SetXAttrIn args) =>
        XAttr(node, FuseOpcode.SetXAttr, name, default, value, args.Flags).Error;

    /// <inheritdoc/>
    public Errno RemoveXAttr(in FuseContext ctx, NodeId node, ReadOnlySpan<byte> name) =>
        XAttr(node, FuseOpcode.RemoveXAttr, name, default, default, 0).Error;

    /// <summary>
    /// GETXATTR, LISTXATTR, SETXATTR and REMOVEXATTR: the share's switches (--xattr, read-only), then the name and
    /// value checks, then the call through the node's /proc/self/fd link (the xattr calls have no O_PATH form).
    /// </summary>
    private Result<int> XAttr(NodeId node, FuseOpcode op, ReadOnlySpan<byte> name, Span<byte> destination, ReadOnlySpan<byte> value, uint flags)
    {
        if (!_options.Xattr) return Errno.ENOSYS;
        if (ReadOnly && op is FuseOpcode.SetXAttr or FuseOpcode.RemoveXAttr) return Errno.EROFS;
        var check = op == FuseOpcode.ListXAttr ? Errno.Ok : CheckXattrName(name);
        if (check.IsError) return check;
        const uint known = 1 | 2; // XATTR_CREATE | XATTR_REPLACE
        if (op == FuseOpcode.SetXAttr && value.Length > XattrSizeMax) return Errno.E2BIG;
        if (op == FuseOpcode.SetXAttr && (flags & ~known) != 0) return Errno.EINVAL;
        var err = Acquire(node, out _, out var lease);
        if (err.IsError) return err;
        using (lease)
        {
            Span<byte> procBuffer = stackalloc byte[ProcPath.Size];
            Span<byte> nameBuffer = stackalloc byte[XattrNameMax + 1];
            var proc = ProcPath.Format(lease.Fd.Value, procBuffer);
            var cname = op == FuseOpcode.ListXAttr ? default : CString(name, nameBuffer);
            var r = op switch
            {
                FuseOpcode.GetXAttr => Libc.getxattr(proc, cname, destination, (nuint)destination.Length),
                FuseOpcode.ListXAttr => Libc.listxattr(proc, destination, (nuint)destination.Length),
                FuseOpcode.SetXAttr => Libc.setxattr(proc, cname, value, (nuint)value.Length, (int)flags),
                _ => Libc.removexattr(proc, cname),
            };
            return r < 0 ? LastErrno() : (int)r;
        }
    }
}
