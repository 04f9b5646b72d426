using Hypervisor.Interop;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Protocol.Fuse;
using Hypervisor.Protocol.Share;

namespace Hypervisor.Passthrough.FileSystem;

// POSIX ACLs (--posix-acl) and security labels (--security-label): what they add to INIT and to the creating calls.
public sealed partial class PassthroughFileSystem
{
    /// <summary>Whether xattrs are served (--xattr, or implied by --xattrmap and --posix-acl) and the parsed map, if any.</summary>
    private static (bool Xattr, XattrMap? Map) XattrSettings(ShareSettings options)
    {
        XattrMap? map = null;
        if (options.Xattrmap.Length > 0 && !XattrMap.TryParse(options.Xattrmap, out map, out var why))
            throw new ArgumentException($"--xattrmap is not an xattr map: {why}", nameof(options));
        return (options.Xattr || map is not null || options.PosixAcl, map);
    }

    /// <summary>
    /// INIT flags of --posix-acl and --security-label. POSIX_ACL comes with DONT_MASK: the guest then sends modes without
    /// its umask applied and the umask beside them, and the host kernel applies it only where the parent has no default
    /// ACL (virtiofsd does the same). SETXATTR_EXT (asked for with xattrs) brings FUSE_SETXATTR_ACL_KILL_SGID.
    /// </summary>
    private InitFlags XattrInitFlags(InitFlags offered)
    {
        var wanted = InitFlags.None;
        if (_options.PosixAcl && (offered & InitFlags.PosixAcl) != 0) wanted |= InitFlags.PosixAcl | InitFlags.DontMask;
        if (_options.SecurityLabel) wanted |= InitFlags.SecurityCtx;
        return wanted;
    }

    /// <summary>
    /// The mode for a creating call, with the thread's umask set for it: the request's umask under DONT_MASK (the host
    /// kernel then applies it, or a default ACL instead), else none (the guest has applied it already).
    /// </summary>
    private uint CreationMode(uint mode, uint umask)
    {
        var mask = (_negotiated & InitFlags.DontMask) != 0 ? umask & 0x1FF : 0;
        return Credentials.UseUmask(mask) ? mode : mode & ~mask;
    }

    /// <summary>
    /// Labels the new entry <paramref name="cname"/> (NUL-terminated) of <paramref name="parent"/> with the guest's
    /// security context: the context's xattr name, mapped by --xattrmap, set without following a symlink through
    /// <c>/proc/self/fd/PARENT/NAME</c>. The daemon's own credentials set it: the guest's LSM has decided already.
    /// </summary>
    private Errno Label(SafeFd parent, ReadOnlySpan<byte> cname, SecurityContext label)
    {
        if (label.Value.Length > XattrSizeMax) return Errno.E2BIG;
        var check = CheckXattrName(label.Name);
        if (check.IsError) return check;
        Span<byte> nameBuffer = stackalloc byte[XattrNameMax + 1];
        var mapped = HostXattrName(label.Name, nameBuffer, out var xnameLength);
        if (mapped.IsError) return mapped;
        var xname = nameBuffer[..xnameLength];
        Span<byte> path = stackalloc byte[ProcPath.Size + MaxName + 2];
        var proc = ProcPath.Format(parent.Value, path);
        var n = proc.Length - 1;
        path[n++] = (byte)'/';
        cname.CopyTo(path[n..]);
        return Libc.lsetxattr(path[..(n + cname.Length)], xname, label.Value, (nuint)label.Value.Length, 0) == 0 ? Errno.Ok : LastErrno();
    }

    /// <summary>Removes an entry whose label could not be set, so that it is created labelled or not at all.</summary>
    private static void Unmake(SafeFd parent, ReadOnlySpan<byte> cname, bool isDir) => _ = Libc.unlinkat(parent, cname, isDir ? Libc.AT_REMOVEDIR : 0);

    /// <inheritdoc/>
    public Result<EntryOut> Symlink(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, ReadOnlySpan<byte> target, SecurityContext label) =>
        MakeNode(ctx, parent, name, FuseOpcode.Symlink, 0, 0, target, SymlinkTargetCheck(target), 0, label);

    /// <inheritdoc/>
    public Result<EntryOut> MkNod(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, in MkNodIn args, SecurityContext label) =>
        MakeNode(ctx, parent, name, FuseOpcode.MkNod, args.Mode & (Libc.S_IFMT | 0xFFF), args.Rdev, default, MkNodCheck(args.Mode), args.Umask, label);

    /// <inheritdoc/>
    public Result<EntryOut> MkDir(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, in MkDirIn args, SecurityContext label) =>
        MakeNode(ctx, parent, name, FuseOpcode.MkDir, args.Mode & 0xFFF, 0, default, Errno.Ok, args.Umask, label);
}
