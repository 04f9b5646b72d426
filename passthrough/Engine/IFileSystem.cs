using Hypervisor.Protocol.Fuse;

namespace Hypervisor.Passthrough.Engine;

/// <summary>
/// Who sent a request, from <c>fuse_in_header</c>: the guest's uid, gid and pid; for CREATE, MKNOD, MKDIR and SYMLINK
/// with FUSE_CREATE_SUPP_GROUP, <paramref name="SuppGid"/> is the supplementary group the caller is in that owns the
/// parent directory (the FUSE_EXT_GROUPS extension), else <see cref="NoGroup"/>.
/// </summary>
public readonly record struct FuseContext(RequestId Unique, uint Uid, uint Gid, uint Pid, uint SuppGid = FuseContext.NoGroup)
{
    /// <summary>No supplementary group: (gid_t)-1, which is never a group.</summary>
    public const uint NoGroup = uint.MaxValue;
}

/// <summary>The reply of CREATE: the new entry and the open file.</summary>
public readonly record struct CreateOut(EntryOut Entry, OpenOut Open);

/// <summary>
/// The low-level FUSE filesystem contract: one member per FUSE operation, addressed by node ids, never by paths.
/// Every member defaults to ENOSYS so a filesystem implements what it supports. Implementations are called from
/// several threads at once. Names are the guest's bytes (already checked by the engine to contain no NUL); every
/// other check (single component, no '/', '.'/'..') belongs to the filesystem because it knows what a name means.
/// </summary>
public interface IFileSystem
{
    /// <summary>
    /// INIT: the session starts (or restarts after a second INIT). <paramref name="offered"/> is what the client
    /// supports; returns the subset the filesystem wants enabled.
    /// </summary>
    InitFlags Init(InitFlags offered) => InitFlags.None;

    /// <summary>DESTROY, or a new INIT: forget every node and handle of the session.</summary>
    void Destroy() { }

    /// <summary>LOOKUP: one name in a directory; a success adds one to the node's lookup count.</summary>
    Result<EntryOut> Lookup(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name) => Errno.ENOSYS;

    /// <summary>FORGET / BATCH_FORGET: the client drops <paramref name="count"/> lookups of the node.</summary>
    void Forget(NodeId node, ulong count) { }

    /// <summary>GETATTR; <paramref name="handle"/> is set when the client named an open file.</summary>
    Result<AttrOut> GetAttr(in FuseContext ctx, NodeId node, FileHandle? handle) => Errno.ENOSYS;

    /// <summary>SETATTR: mode, owner, size, times as <c>args.Valid</c> says.</summary>
    Result<AttrOut> SetAttr(in FuseContext ctx, NodeId node, in SetAttrIn args) => Errno.ENOSYS;

    /// <summary>READLINK: writes the target into <paramref name="destination"/>, returns its length.</summary>
    Result<int> ReadLink(in FuseContext ctx, NodeId node, Span<byte> destination) => Errno.ENOSYS;

    /// <summary>SYMLINK: creates <paramref name="name"/> in <paramref name="parent"/> pointing at <paramref name="target"/>.</summary>
    Result<EntryOut> Symlink(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, ReadOnlySpan<byte> target) => Errno.ENOSYS;

    /// <summary>MKNOD: regular files, FIFOs, sockets, device nodes.</summary>
    Result<EntryOut> MkNod(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, in MkNodIn args) => Errno.ENOSYS;

    /// <summary>MKDIR.</summary>
    Result<EntryOut> MkDir(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, in MkDirIn args) => Errno.ENOSYS;

    /// <summary>
    /// SYMLINK, MKNOD, MKDIR and CREATE once FUSE_SECURITY_CTX is agreed: <paramref name="label"/> is the context the new
    /// file must carry (empty: none). A filesystem creates the file with it or not at all; one that cannot label refuses
    /// a labelled request with EOPNOTSUPP.
    /// </summary>
    Result<EntryOut> Symlink(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, ReadOnlySpan<byte> target, SecurityContext label) =>
        label.IsEmpty ? Symlink(ctx, parent, name, target) : Errno.EOPNOTSUPP;

    /// <summary>MKNOD with a security context; see the SYMLINK overload.</summary>
    Result<EntryOut> MkNod(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, in MkNodIn args, SecurityContext label) =>
        label.IsEmpty ? MkNod(ctx, parent, name, args) : Errno.EOPNOTSUPP;

    /// <summary>MKDIR with a security context; see the SYMLINK overload.</summary>
    Result<EntryOut> MkDir(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, in MkDirIn args, SecurityContext label) =>
        label.IsEmpty ? MkDir(ctx, parent, name, args) : Errno.EOPNOTSUPP;

    /// <summary>UNLINK.</summary>
    Errno Unlink(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name) => Errno.ENOSYS;

    /// <summary>RMDIR.</summary>
    Errno RmDir(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name) => Errno.ENOSYS;

    /// <summary>RENAME and RENAME2 (<paramref name="flags"/>: RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT; 0 for RENAME).</summary>
    Errno Rename(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, NodeId newParent, ReadOnlySpan<byte> newName, uint flags) => Errno.ENOSYS;

    /// <summary>LINK: a new name for <paramref name="node"/>; a success adds one to its lookup count.</summary>
    Result<EntryOut> Link(in FuseContext ctx, NodeId node, NodeId newParent, ReadOnlySpan<byte> newName) => Errno.ENOSYS;

    /// <summary>OPEN of a regular file.</summary>
    Result<OpenOut> Open(in FuseContext ctx, NodeId node, in OpenIn args) => Errno.ENOSYS;

    /// <summary>READ into <paramref name="destination"/> (at most <c>args.Size</c> bytes); returns the bytes read.</summary>
    Result<int> Read(in FuseContext ctx, NodeId node, in ReadIn args, Span<byte> destination) => Errno.ENOSYS;

    /// <summary>WRITE of <paramref name="data"/>; returns the bytes written.</summary>
    Result<uint> Write(in FuseContext ctx, NodeId node, in WriteIn args, ReadOnlySpan<byte> data) => Errno.ENOSYS;

    /// <summary>
    /// READ into guest memory: reads at most the total length of <paramref name="destination"/> (the engine has
    /// trimmed it to the size asked for) at <c>args.Offset</c>, filling the buffers in order; returns the bytes read.
    /// </summary>
    Result<int> ReadTo(in FuseContext ctx, NodeId node, in ReadIn args, ReadOnlySpan<IoBuffer> destination) => Errno.ENOSYS;

    /// <summary>WRITE from guest memory: writes the buffers of <paramref name="source"/> in order at <c>args.Offset</c>; returns the bytes written.</summary>
    Result<uint> WriteFrom(in FuseContext ctx, NodeId node, in WriteIn args, ReadOnlySpan<IoBuffer> source) => Errno.ENOSYS;

    /// <summary>STATFS of the filesystem holding <paramref name="node"/>.</summary>
    Result<KStatFs> StatFs(in FuseContext ctx, NodeId node) => Errno.ENOSYS;

    /// <summary>RELEASE: the last close of an open file.</summary>
    Errno Release(in FuseContext ctx, NodeId node, in ReleaseIn args) => Errno.ENOSYS;

    /// <summary>FSYNC.</summary>
    Errno FSync(in FuseContext ctx, NodeId node, in FSyncIn args) => Errno.ENOSYS;

    /// <summary>SETXATTR; <paramref name="args"/> is zero-extended when the client did not negotiate SETXATTR_EXT.</summary>
    Errno SetXAttr(in FuseContext ctx, NodeId node, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, in SetXAttrIn args) => Errno.ENOSYS;

    /// <summary>
    /// GETXATTR: with an empty <paramref name="destination"/> returns the value's size, otherwise copies the value
    /// and returns its length (ERANGE when it does not fit).
    /// </summary>
    Result<int> GetXAttr(in FuseContext ctx, NodeId node, ReadOnlySpan<byte> name, Span<byte> destination) => Errno.ENOSYS;

    /// <summary>LISTXATTR: NUL-separated names, with the same size-query rule as <see cref="GetXAttr"/>.</summary>
    Result<int> ListXAttr(in FuseContext ctx, NodeId node, Span<byte> destination) => Errno.ENOSYS;

    /// <summary>REMOVEXATTR.</summary>
    Errno RemoveXAttr(in FuseContext ctx, NodeId node, ReadOnlySpan<byte> name) => Errno.ENOSYS;

    /// <summary>FLUSH: a close(2) of a file descriptor of the open file.</summary>
    Errno Flush(in FuseContext ctx, NodeId node, in FlushIn args) => Errno.ENOSYS;

    /// <summary>OPENDIR.</summary>
    Result<OpenOut> OpenDir(in FuseContext ctx, NodeId node, in OpenIn args) => Errno.ENOSYS;

    /// <summary>
    /// READDIR (<paramref name="plus"/> false) or READDIRPLUS: encodes entries from <c>args.Offset</c> into
    /// <paramref name="destination"/> with a <see cref="DirentWriter"/>; returns the bytes written (0 at the end).
    /// READDIRPLUS entries other than "." and ".." count as lookups.
    /// </summary>
    Result<int> ReadDir(in FuseContext ctx, NodeId node, in ReadIn args, Span<byte> destination, bool plus) => Errno.ENOSYS;

    /// <summary>RELEASEDIR.</summary>
    Errno ReleaseDir(in FuseContext ctx, NodeId node, in ReleaseIn args) => Errno.ENOSYS;

    /// <summary>FSYNCDIR.</summary>
    Errno FSyncDir(in FuseContext ctx, NodeId node, in FSyncIn args) => Errno.ENOSYS;

    /// <summary>GETLK: the first lock that would conflict, or one with type F_UNLCK.</summary>
    Result<FileLock> GetLk(in FuseContext ctx, NodeId node, in LkIn args) => Errno.ENOSYS;

    /// <summary>SETLK / SETLKW (<paramref name="wait"/>), POSIX locks or flock when <c>args.LkFlags</c> has FUSE_LK_FLOCK.</summary>
    Errno SetLk(in FuseContext ctx, NodeId node, in LkIn args, bool wait) => Errno.ENOSYS;

    /// <summary>
    /// For deadlock detection of SETLKW: writes into <paramref name="owners"/> the lock owners of this session (other
    /// than <c>args.Owner</c>) whose POSIX locks on <paramref name="node"/> keep <paramref name="args"/> from being
    /// granted, and returns how many it wrote. 0 when none is known (a host process holds the lock, or the filesystem
    /// cannot tell), which never reports a deadlock.
    /// </summary>
    int GetLockBlockers(in FuseContext ctx, NodeId node, in LkIn args, Span<ulong> owners) => 0;

    /// <summary>ACCESS.</summary>
    Errno Access(in FuseContext ctx, NodeId node, uint mask) => Errno.ENOSYS;

    /// <summary>CREATE: create and open a regular file; a success adds one to the node's lookup count.</summary>
    Result<CreateOut> Create(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, in CreateIn args) => Errno.ENOSYS;

    /// <summary>CREATE with a security context; see the SYMLINK overload.</summary>
    Result<CreateOut> Create(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, in CreateIn args, SecurityContext label) =>
        label.IsEmpty ? Create(ctx, parent, name, args) : Errno.EOPNOTSUPP;

    /// <summary>FALLOCATE.</summary>
    Errno FAllocate(in FuseContext ctx, NodeId node, in FAllocateIn args) => Errno.ENOSYS;

    /// <summary>LSEEK (SEEK_DATA / SEEK_HOLE); returns the new offset.</summary>
    Result<ulong> LSeek(in FuseContext ctx, NodeId node, in LSeekIn args) => Errno.ENOSYS;

    /// <summary>COPY_FILE_RANGE; returns the bytes copied.</summary>
    Result<ulong> CopyFileRange(in FuseContext ctx, NodeId node, in CopyFileRangeIn args) => Errno.ENOSYS;

    /// <summary>SYNCFS.</summary>
    Errno SyncFs(in FuseContext ctx, NodeId node) => Errno.ENOSYS;
}

/// <summary>A filesystem that implements nothing: every operation answers ENOSYS. Lets the engine be tested alone.</summary>
public sealed class NullFileSystem : IFileSystem
{
}
