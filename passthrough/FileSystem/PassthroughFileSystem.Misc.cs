using Hypervisor.Passthrough.Engine;
using Hypervisor.Interop;
using Hypervisor.Protocol.Fuse;
using Hypervisor.Protocol.Share;

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

    // ---- extended attributes: ENOSYS unless --xattr (or --xattrmap, --posix-acl), as virtiofsd answers (the guest then stops asking) ----

    private static Errno CheckXattrName(ReadOnlySpan<byte> name)
    {
        if (name.IsEmpty) return Errno.ERANGE;
        if (name.Length > XattrNameMax) return Errno.ERANGE;
        return name.IndexOf((byte)0) >= 0 ? Errno.EINVAL : Errno.Ok;
    }

    /// <inheritdoc/>
    public Result<int> GetXAttr(in FuseContext ctx, NodeId node, ReadOnlySpan<byte> name, Span<byte> destination) =>
        XAttr(ctx, node, FuseOpcode.GetXAttr, name, destination, default, 0, 0);

    /// <inheritdoc/>
    public Result<int> ListXAttr(in FuseContext ctx, NodeId node, Span<byte> destination) =>
        XAttr(ctx, node, FuseOpcode.ListXAttr, default, destination, default, 0, 0);

    /// <inheritdoc/>
    public Errno SetXAttr(in FuseContext ctx, NodeId node, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, in SetXAttrIn args) =>
        XAttr(ctx, node, FuseOpcode.SetXAttr, name, default, value, args.Flags, args.SetxattrFlags).Error;

    /// <inheritdoc/>
    public Errno RemoveXAttr(in FuseContext ctx, NodeId node, ReadOnlySpan<byte> name) =>
        XAttr(ctx, node, FuseOpcode.RemoveXAttr, name, default, default, 0, 0).Error;

    /// <summary>
    /// GETXATTR, LISTXATTR, SETXATTR and REMOVEXATTR: the share's switches (--xattr, read-only), then the name and
    /// value checks, the name mapped by --xattrmap, then the call through the node's /proc/self/fd link (the xattr calls
    /// have no O_PATH form). A listing is mapped back for the guest, names the map hides left out.
    /// </summary>
    private Result<int> XAttr(in FuseContext ctx, NodeId node, FuseOpcode op, ReadOnlySpan<byte> name, Span<byte> destination,
        ReadOnlySpan<byte> value, uint flags, uint setFlags)
    {
        if (!_xattr) return Errno.ENOSYS;
        if (ReadOnly && op is FuseOpcode.SetXAttr or FuseOpcode.RemoveXAttr) return Errno.EROFS;
        var check = op == FuseOpcode.ListXAttr ? Errno.Ok : CheckXattrName(name);
        if (check.IsError) return check;
        const uint known = 1 | 2; // XATTR_CREATE | XATTR_REPLACE
        if (op == FuseOpcode.SetXAttr && value.Length > XattrSizeMax) return Errno.E2BIG;
        if (op == FuseOpcode.SetXAttr && (flags & ~known) != 0) return Errno.EINVAL;
        Span<byte> nameBuffer = stackalloc byte[XattrNameMax + 1];
        scoped ReadOnlySpan<byte> cname = default;
        if (op != FuseOpcode.ListXAttr)
        {
            var mapped = HostXattrName(name, nameBuffer, out var cnameLength);
            // A name the map refuses reads as absent, as virtiofsd answers: GETXATTR agrees with what LISTXATTR shows.
            if (mapped == Errno.EPERM && op == FuseOpcode.GetXAttr) return Errno.ENODATA;
            if (mapped.IsError) return mapped;
            cname = nameBuffer[..cnameLength];
        }
        var err = Acquire(node, out _, out var lease);
        if (err.IsError) return err;
        using (lease)
        {
            Span<byte> procBuffer = stackalloc byte[ProcPath.Size];
            var proc = ProcPath.Format(lease.Fd.Value, procBuffer);
            if (op == FuseOpcode.ListXAttr && _xattrMap is { } map) return ListMapped(map, proc, destination);
            // FUSE_SETXATTR_ACL_KILL_SGID: the ACL is set as the caller, without CAP_FSETID, so that the host kernel
            // clears the set-group-ID bit exactly when the caller is neither in the file's group nor privileged.
            var asCaller = op == FuseOpcode.SetXAttr && (setFlags & FuseConstants.SetXAttrAclKillSgid) != 0 && _options.PosixAcl;
            nint r;
            var failure = Errno.Ok;
            Credentials credentials = default;
            if (asCaller && AsCaller(ctx, out credentials) is { IsError: true } refused) return refused;
            using (credentials)
            {
                r = op switch
                {
                    FuseOpcode.GetXAttr => Libc.getxattr(proc, cname, destination, (nuint)destination.Length),
                    FuseOpcode.ListXAttr => Libc.listxattr(proc, destination, (nuint)destination.Length),
                    FuseOpcode.SetXAttr => Libc.setxattr(proc, cname, value, (nuint)value.Length, (int)flags),
                    _ => Libc.removexattr(proc, cname),
                };
                if (r < 0) failure = LastErrno();
            }
            return r < 0 ? failure : (int)r;
        }
    }

    /// <summary>
    /// The host's name for a guest's attribute name, NUL-terminated in <paramref name="buffer"/> (XATTR_NAME_MAX + 1
    /// bytes), <paramref name="length"/> bytes with the NUL: mapped by --xattrmap when there is one, which may refuse it
    /// (EPERM, EOPNOTSUPP) or make it too long (ERANGE).
    /// </summary>
    private Errno HostXattrName(ReadOnlySpan<byte> name, Span<byte> buffer, out int length)
    {
        length = 0;
        if (_xattrMap is null)
        {
            if (name.Length > XattrNameMax) return Errno.ERANGE;
            length = CString(name, buffer).Length;
            return Errno.Ok;
        }
        var mapped = _xattrMap.MapClient(name, buffer[..XattrNameMax], out var n);
        if (mapped.IsError) return mapped;
        buffer[n] = 0;
        length = n + 1;
        return Errno.Ok;
    }

    /// <summary>
    /// LISTXATTR under --xattrmap: the host's whole list (at most XATTR_LIST_MAX) into a pooled buffer, then mapped into
    /// <paramref name="destination"/>, or only measured for a size query. ERANGE when the mapped list does not fit.
    /// </summary>
    private static Result<int> ListMapped(XattrMap map, ReadOnlySpan<byte> proc, Span<byte> destination)
    {
        var raw = System.Buffers.ArrayPool<byte>.Shared.Rent(XattrSizeMax);
        try
        {
            var r = Libc.listxattr(proc, raw, (nuint)XattrSizeMax);
            if (r < 0) return LastErrno();
            var size = map.MapServerList(raw.AsSpan(0, (int)r), destination);
            return size < 0 ? Errno.ERANGE : size;
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(raw);
        }
    }
}
