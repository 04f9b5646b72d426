using Hypervisor.Passthrough.Engine;
using Hypervisor.Interop;
using Hypervisor.Passthrough.Share;
using Hypervisor.Protocol.Share;
using Hypervisor.Protocol.Fuse;

namespace Hypervisor.Passthrough.FileSystem;

public sealed partial class PassthroughFileSystem
{
    /// <summary>
    /// The host open flags for a guest's: access mode, append, truncate, sync flags kept; O_CREAT/O_EXCL (handled
    /// by CREATE), O_NOFOLLOW (the reopen goes through a magic link), O_NOCTTY, O_NONBLOCK, O_DIRECTORY, O_PATH and
    /// O_TMPFILE dropped; O_DIRECT kept only with --allow-direct-io; O_NOATIME only with --preserve-noatime (as virtiofsd,
    /// which clears it because the open fails with EPERM where the caller neither owns the file nor has CAP_FOWNER). With the writeback cache the kernel may read
    /// pages of a write-only file and computes append offsets itself, so write-only becomes read-write and
    /// O_APPEND is dropped (as virtiofsd does).
    /// </summary>
    private int HostOpenFlags(uint guestFlags)
    {
        var flags = (int)guestFlags;
        var kept = Libc.O_ACCMODE | Libc.O_APPEND | Libc.O_TRUNC | Libc.O_SYNC | Libc.O_DSYNC | Libc.O_LARGEFILE;
        if (_options.AllowDirectIo) kept |= Libc.O_DIRECT;
        if (_options.PreserveNoatime) kept |= Libc.O_NOATIME;
        var host = (flags & kept) | Libc.O_CLOEXEC;
        if ((_negotiated & InitFlags.WritebackCache) != 0)
        {
            if ((host & Libc.O_ACCMODE) == Libc.O_WRONLY) host = (host & ~Libc.O_ACCMODE) | Libc.O_RDWR;
            host &= ~Libc.O_APPEND;
        }
        return host;
    }

    private uint OpenReplyFlags(uint guestFlags)
    {
        var cache = _settings.Cache;
        var flags = OpenOutFlags.None;
        if (_settings.DirectIo || cache is CachePolicy.Never or CachePolicy.Metadata
            || (_options.AllowDirectIo && ((int)guestFlags & Libc.O_DIRECT) != 0))
            flags |= OpenOutFlags.DirectIo;
        if (cache == CachePolicy.Always) flags |= OpenOutFlags.KeepCache;
        return (uint)flags;
    }

    private static bool WantsWrite(uint guestFlags) =>
        ((int)guestFlags & Libc.O_ACCMODE) != Libc.O_RDONLY || ((int)guestFlags & Libc.O_TRUNC) != 0;

    /// <summary>Only regular files are opened for I/O: directories EISDIR, symlinks ELOOP (O_NOFOLLOW's answer),
    /// FIFOs, sockets and devices ENXIO (see the class remarks).</summary>
    private static Errno CheckOpenable(Node node) => node.Type switch
    {
        Libc.S_IFREG => Errno.Ok,
        Libc.S_IFDIR => Errno.EISDIR,
        Libc.S_IFLNK => Errno.ELOOP,
        _ => Errno.ENXIO,
    };

    /// <inheritdoc/>
    public Result<OpenOut> Open(in FuseContext ctx, NodeId node, in OpenIn args)
    {
        if (((int)args.Flags & Libc.O_ACCMODE) == Libc.O_ACCMODE) return Errno.EINVAL;
        if (ReadOnly && WantsWrite(args.Flags)) return Errno.EROFS;
        var err = Acquire(node, out var n, out var lease);
        if (err.IsError) return err;
        using (lease)
        {
            err = CheckOpenable(n!);
            if (err.IsError) return err;
            var fd = Reopen(lease.Fd.Value, HostOpenFlags(args.Flags));
            if (fd < 0) return LastErrno();
            var file = new SafeFd(fd);
            if (((int)args.Flags & Libc.O_TRUNC) != 0 && (args.OpenFlags & FuseConstants.OpenKillSuidGid) != 0) KillSuidGid(file, HostGidOrNone(ctx.Gid));
            var open = Register(n!, file, isDir: false, (int)args.Flags & Libc.O_ACCMODE, HostOpenFlags(args.Flags));
            return new OpenOut { Fh = open.Id, OpenFlags = OpenReplyFlags(args.Flags) };
        }
    }

    /// <inheritdoc/>
    public Result<CreateOut> Create(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, in CreateIn args) =>
        Create(ctx, parent, name, args, default);

    /// <inheritdoc/>
    public Result<CreateOut> Create(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, in CreateIn args, SecurityContext label)
    {
        if (ReadOnly) return Errno.EROFS;
        var check = CheckName(name);
        if (check.IsError) return check;
        var guestExcl = ((int)args.Flags & Libc.O_EXCL) != 0;
        // open(".", O_CREAT) is EISDIR on Linux, EEXIST with O_EXCL.
        if (IsDots(name)) return guestExcl ? Errno.EEXIST : Errno.EISDIR;
        if (((int)args.Flags & Libc.O_ACCMODE) == Libc.O_ACCMODE) return Errno.EINVAL;
        var err = AcquireDir(parent, out var lease);
        if (err.IsError) return err;
        using (lease)
        {
            var reach = CheckChild(lease.Fd, name, ChildUse.Create);
            if (reach.IsError) return reach;
            Span<byte> nameBuffer = stackalloc byte[MaxName + 1];
            var cname = CString(name, nameBuffer);
            var hostFlags = HostOpenFlags(args.Flags);
            var pathFd = -1;
            int fd;
            var failure = Errno.Ok;
            var mode = CreationMode(args.Mode & 0xFFF, args.Umask);
            var asCaller = AsCaller(ctx, out var credentials);
            if (asCaller.IsError) return asCaller;
            using (credentials)
            {
                // Always create exclusively so that an existing FIFO or device is never opened by this call; an
                // existing name (without the guest's O_EXCL) is then opened only after checking it is a regular file.
                // EMFILE and ENFILE come before the name is looked up, so nothing was created and the open can be tried again.
                fd = OpenAt(lease.Fd, cname, hostFlags | Libc.O_CREAT | Libc.O_EXCL | Libc.O_NOFOLLOW, mode);
                if (fd < 0 && Libc.LastErrno == Errno.EEXIST.Value && !guestExcl)
                {
                    pathFd = OpenAt(lease.Fd, cname, Libc.O_PATH | Libc.O_NOFOLLOW | Libc.O_CLOEXEC);
                    if (pathFd < 0) return LastErrno();
                    if (Libc.fstat(pathFd, out var est) != 0 || (est.Mode & Libc.S_IFMT) != Libc.S_IFREG)
                    {
                        var type = est.Mode & Libc.S_IFMT;
                        Libc.close(pathFd);
                        return type == Libc.S_IFDIR ? Errno.EISDIR : type == Libc.S_IFLNK ? Errno.ELOOP : Errno.ENXIO;
                    }
                    fd = Reopen(pathFd, hostFlags);
                    if (fd < 0)
                    {
                        failure = LastErrno();
                        Libc.close(pathFd);
                        pathFd = -1;
                    }
                }
                else if (fd < 0)
                {
                    failure = LastErrno();
                }
            }
            if (fd < 0) return failure;
            var file = new SafeFd(fd);
            // Only a file this call created gets the guest's label, and only such a file is removed when that fails.
            if (!label.IsEmpty && pathFd < 0)
            {
                var labelled = Label(lease.Fd, cname, label);
                if (labelled.IsError)
                {
                    file.Dispose();
                    Unmake(lease.Fd, cname, isDir: false);
                    return labelled;
                }
            }
            if (((int)args.Flags & Libc.O_TRUNC) != 0 && (args.OpenFlags & FuseConstants.OpenKillSuidGid) != 0) KillSuidGid(file, HostGidOrNone(ctx.Gid));
            if (Libc.fstat(file, out var st) != 0)
            {
                var errno = LastErrno();
                file.Dispose();
                if (pathFd >= 0) Libc.close(pathFd);
                return errno;
            }
            if (pathFd < 0)
            {
                pathFd = Reopen(fd, Libc.O_PATH | Libc.O_CLOEXEC);
                if (pathFd < 0)
                {
                    var errno = LastErrno();
                    file.Dispose();
                    return errno;
                }
            }
            var interned = Intern(pathFd, st, parent.Value, name, out var node);
            if (interned.IsError)
            {
                file.Dispose();
                return interned;
            }
            var open = Register(node!, file, isDir: false, (int)args.Flags & Libc.O_ACCMODE, hostFlags);
            return new CreateOut(MakeEntry(node!, st), new OpenOut { Fh = open.Id, OpenFlags = OpenReplyFlags(args.Flags) });
        }
    }

    /// <inheritdoc/>
    public Result<int> Read(in FuseContext ctx, NodeId node, in ReadIn args, Span<byte> destination)
    {
        var err = GetFile(node, args.Fh, dir: false, out var file);
        if (err.IsError) return err;
        if (args.Offset > long.MaxValue) return Errno.EINVAL;
        var count = Math.Min((int)Math.Min(args.Size, int.MaxValue), destination.Length);
        var n = Libc.pread(file!.Fd, destination, (nuint)count, (long)args.Offset);
        if (n < 0) return LastErrno();
        Interlocked.Add(ref _bytesRead, n);
        return (int)n;
    }

    /// <inheritdoc/>
    public Result<uint> Write(in FuseContext ctx, NodeId node, in WriteIn args, ReadOnlySpan<byte> data)
    {
        if (ReadOnly) return Errno.EROFS;
        var err = GetFile(node, args.Fh, dir: false, out var file);
        if (err.IsError) return err;
        if (args.Offset > long.MaxValue) return Errno.EINVAL;
        var count = Math.Min((int)Math.Min(args.Size, int.MaxValue), data.Length);
        return Written(ctx, args, file!, Libc.pwrite(file!.Fd, data, (nuint)count, (long)args.Offset));
    }

    /// <summary>What follows a write of <paramref name="n"/> bytes (or -1 and errno) to <paramref name="file"/>.</summary>
    private Result<uint> Written(in FuseContext ctx, in WriteIn args, OpenFile file, nint n)
    {
        if (n < 0) return LastErrno();
        // HANDLE_KILLPRIV_V2: the client asks the server to drop set-user-ID/set-group-ID after a write by an
        // unprivileged caller; the daemon writes as root, so it clears them itself.
        if ((args.WriteFlags & FuseConstants.WriteKillSuidGid) != 0) KillSuidGid(file.Fd, HostGidOrNone(ctx.Gid));
        Interlocked.Add(ref _bytesWritten, n);
        return (uint)n;
    }

    /// <inheritdoc/>
    public unsafe Result<int> ReadTo(in FuseContext ctx, NodeId node, in ReadIn args, ReadOnlySpan<IoBuffer> destination)
    {
        var err = GetFile(node, args.Fh, dir: false, out var file);
        if (err.IsError) return err;
        if (args.Offset > long.MaxValue || destination.Length > Libc.IOV_MAX) return Errno.EINVAL;
        nint n;
        // Safe: IoBuffer is laid out as struct iovec, and each buffer lies inside a guest-memory mapping the transport
        // checked and keeps for the duration of the call; the kernel reports a fault there as EFAULT, never a signal.
        fixed (IoBuffer* iov = destination) n = Libc.preadv(file!.Fd, (IoVec*)iov, destination.Length, (long)args.Offset);
        if (n < 0) return LastErrno();
        Interlocked.Add(ref _bytesRead, n);
        return (int)n;
    }

    /// <inheritdoc/>
    public unsafe Result<uint> WriteFrom(in FuseContext ctx, NodeId node, in WriteIn args, ReadOnlySpan<IoBuffer> source)
    {
        if (ReadOnly) return Errno.EROFS;
        var err = GetFile(node, args.Fh, dir: false, out var file);
        if (err.IsError) return err;
        if (args.Offset > long.MaxValue || source.Length > Libc.IOV_MAX) return Errno.EINVAL;
        nint n;
        // Safe: as in ReadTo; the kernel only reads the buffers.
        fixed (IoBuffer* iov = source) n = Libc.pwritev(file!.Fd, (IoVec*)iov, source.Length, (long)args.Offset);
        return Written(ctx, args, file, n);
    }

    /// <inheritdoc/>
    public Errno Flush(in FuseContext ctx, NodeId node, in FlushIn args)
    {
        var err = GetFile(node, args.Fh, dir: false, out var file);
        if (err.IsError) return err;
        // A close(2) in the guest releases that process's POSIX locks on the file: close its lock descriptor.
        DropOwnerLocks(file!.Node, args.LockOwner);
        // Closing a duplicate reports deferred write errors (NFS-like hosts) as close(2) would, without closing
        // the open file itself.
        var dup = Libc.dup(file.Fd);
        if (dup < 0) return LastErrno();
        return Libc.close(dup) == 0 ? Errno.Ok : LastErrno();
    }

    /// <inheritdoc/>
    public Errno Release(in FuseContext ctx, NodeId node, in ReleaseIn args)
    {
        if (!_files.TryGetValue(args.Fh, out var file) || file.IsDir || file.Node.Id != node.Value) return Errno.EBADF;
        if (!_files.TryRemove(args.Fh, out _)) return Errno.EBADF;
        ForgetHandle(file);
        if ((args.ReleaseFlags & FuseConstants.ReleaseFlockUnlock) != 0) Libc.flock(file.Fd, Libc.LOCK_UN);
        if (args.LockOwner != 0) DropOwnerLocks(file.Node, args.LockOwner);
        if (Interlocked.Decrement(ref file.Node.OpenCount) == 0) file.Node.DropLockFds(_kept);
        file.Fd.Dispose();
        return Errno.Ok;
    }

    /// <inheritdoc/>
    public Errno FSync(in FuseContext ctx, NodeId node, in FSyncIn args)
    {
        var err = GetFile(node, args.Fh, dir: false, out var file);
        return err.IsError ? err : Sync(file!, args);
    }

    /// <summary>fsync(2), or fdatasync(2) when FUSE_FSYNC_FDATASYNC is set, of an open file or directory.</summary>
    private static Errno Sync(OpenFile file, in FSyncIn args)
    {
        var r = (args.FsyncFlags & FuseConstants.FSyncFDataSync) != 0 ? Libc.fdatasync(file.Fd) : Libc.fsync(file.Fd);
        return r == 0 ? Errno.Ok : LastErrno();
    }

    /// <inheritdoc/>
    public Errno FAllocate(in FuseContext ctx, NodeId node, in FAllocateIn args)
    {
        if (ReadOnly) return Errno.EROFS;
        var err = GetFile(node, args.Fh, dir: false, out var file);
        if (err.IsError) return err;
        if (args.Offset > long.MaxValue || args.Length > long.MaxValue) return Errno.EINVAL;
        return Libc.fallocate(file!.Fd, (int)args.Mode, (long)args.Offset, (long)args.Length) == 0 ? Errno.Ok : LastErrno();
    }

    /// <inheritdoc/>
    public Result<ulong> LSeek(in FuseContext ctx, NodeId node, in LSeekIn args)
    {
        var err = GetFile(node, args.Fh, dir: false, out var file);
        if (err.IsError) return err;
        if (args.Whence > Libc.SEEK_HOLE) return Errno.EINVAL;
        var r = Libc.lseek(file!.Fd, (long)args.Offset, (int)args.Whence);
        if (r < 0) return LastErrno();
        return (ulong)r;
    }

    /// <inheritdoc/>
    public Result<ulong> CopyFileRange(in FuseContext ctx, NodeId node, in CopyFileRangeIn args)
    {
        if (ReadOnly) return Errno.EROFS;
        if (args.Flags != 0) return Errno.EINVAL;
        var err = GetFile(node, args.FhIn, dir: false, out var input);
        if (err.IsError) return err;
        err = GetFile(new NodeId(args.NodeidOut), args.FhOut, dir: false, out var output);
        if (err.IsError) return err;
        if (args.OffIn > long.MaxValue || args.OffOut > long.MaxValue) return Errno.EINVAL;
        var offIn = (long)args.OffIn;
        var offOut = (long)args.OffOut;
        var len = (nuint)Math.Min(args.Len, (ulong)int.MaxValue);
        var r = Libc.copy_file_range(input!.Fd, ref offIn, output!.Fd, ref offOut, len, 0);
        if (r < 0) return LastErrno();
        Interlocked.Add(ref _bytesWritten, r);
        return (ulong)r;
    }

    // ---- locks -------------------------------------------------------------------------------------------------

    private static Errno ToFlock(in FileLock lk, out Flock fl)
    {
        fl = default;
        if (lk.Type > Libc.F_UNLCK) return Errno.EINVAL;
        if (lk.Start > long.MaxValue || (lk.End != ulong.MaxValue && lk.End > long.MaxValue) || lk.End < lk.Start) return Errno.EINVAL;
        fl.Type = (short)lk.Type;
        fl.Whence = Libc.SEEK_SET;
        fl.Start = (long)lk.Start;
        // fuse_file_lock.end is inclusive, OFFSET_MAX (all ones) or beyond long means "to the end of file".
        fl.Len = lk.End >= long.MaxValue ? 0 : (long)(lk.End - lk.Start + 1);
        fl.Pid = 0; // OFD locks require l_pid 0.
        return Errno.Ok;
    }

    /// <summary>
    /// The descriptor carrying <paramref name="owner"/>'s locks on the file, opened on first use by reopening the
    /// open file read-write (locks of either type need the matching access; the guest's own access was checked
    /// against its handle already), or read-only where the host refuses write access.
    /// </summary>
    private Errno OwnerLockFd(OpenFile file, ulong owner, bool create, out SafeFd? fd)
    {
        var node = file.Node;
        lock (node)
        {
            if (node.LockFds is not null && node.LockFds.TryGetValue(owner, out fd)) return Errno.Ok;
            fd = null;
            if (!create) return Errno.Ok;
            var raw = Reopen(file.Fd.Value, Libc.O_RDWR | Libc.O_CLOEXEC);
            if (raw < 0) raw = Reopen(file.Fd.Value, file.AccessMode | Libc.O_CLOEXEC);
            if (raw < 0) return LastErrno();
            fd = new SafeFd(raw);
            (node.LockFds ??= new Dictionary<ulong, SafeFd>())[owner] = fd;
            KeepLockOwner(node, owner, fd);
            return Errno.Ok;
        }
    }

    private void DropOwnerLocks(Node node, ulong owner)
    {
        lock (node)
        {
            node.LockPids?.Remove(owner);
            if (node.LockFds is null || !node.LockFds.Remove(owner, out var fd)) return;
            if (_kept is not null)
            {
                DropLockOwner(node, owner);
                KeptDescriptors.Unlock(fd);
            }
            fd.Dispose();
        }
    }

    private static Errno CheckLockAccess(OpenFile file, uint type)
    {
        // As fcntl(2): a read lock needs a descriptor open for reading, a write lock one open for writing.
        if (type == Libc.F_RDLCK && file.AccessMode == Libc.O_WRONLY) return Errno.EBADF;
        if (type == Libc.F_WRLCK && file.AccessMode == Libc.O_RDONLY) return Errno.EBADF;
        return Errno.Ok;
    }

    /// <inheritdoc/>
    public Result<FileLock> GetLk(in FuseContext ctx, NodeId node, in LkIn args)
    {
        var err = GetFile(node, args.Fh, dir: false, out var file);
        if (err.IsError) return err;
        err = ToFlock(args.Lk, out var fl);
        if (err.IsError) return err;
        if (fl.Type == Libc.F_UNLCK) return Errno.EINVAL;
        err = OwnerLockFd(file!, args.Owner, create: false, out var fd);
        if (err.IsError) return err;
        var temporary = false;
        if (fd is null)
        {
            var raw = Reopen(file!.Fd.Value, file.AccessMode | Libc.O_CLOEXEC);
            if (raw < 0) return LastErrno();
            fd = new SafeFd(raw);
            temporary = true;
        }
        var request = fl;
        try
        {
            if (Libc.fcntl(fd, Libc.F_OFD_GETLK, ref fl) != 0) return LastErrno();
        }
        finally
        {
            if (temporary) fd.Dispose();
        }
        var result = new FileLock { Type = (uint)fl.Type };
        if (fl.Type != Libc.F_UNLCK)
        {
            result.Start = (ulong)fl.Start;
            result.End = fl.Len == 0 ? (ulong)long.MaxValue : (ulong)(fl.Start + fl.Len - 1);
            // OFD locks have no owning process (l_pid -1): name the guest process of the owner holding the lock, or 0
            // when the holder is not one of the guest's (a host process).
            result.Pid = HolderPid(file!.Node, args.Owner, request, fl);
        }
        return result;
    }

    /// <summary>The guest pid of the lock owner (other than <paramref name="requester"/>) that holds <paramref name="conflict"/>; 0 when none of this node's owners holds it.</summary>
    private static uint HolderPid(Node node, ulong requester, Flock request, Flock conflict)
    {
        lock (node)
            return node.LockPids is not null && FindHolder(node, requester, request, conflict, out var holder) && node.LockPids.TryGetValue(holder, out var pid) ? pid : 0;
    }

    /// <summary>
    /// The lock owner of <paramref name="node"/> (other than <paramref name="requester"/>) that holds
    /// <paramref name="conflict"/>: asked from that owner's own descriptor, the same request no longer reports the lock
    /// (a description never conflicts with itself). False when no owner of this node holds it. Under lock(node).
    /// </summary>
    private static bool FindHolder(Node node, ulong requester, Flock request, Flock conflict, out ulong holder)
    {
        foreach (var (owner, ownerFd) in node.LockFds ?? [])
        {
            if (owner == requester) continue;
            var probe = request;
            if (Libc.fcntl(ownerFd, Libc.F_OFD_GETLK, ref probe) != 0) continue;
            if (probe.Type == Libc.F_UNLCK || probe.Start != conflict.Start || probe.Len != conflict.Len || probe.Type != conflict.Type)
            {
                holder = owner;
                return true;
            }
        }
        holder = 0;
        return false;
    }

    /// <inheritdoc/>
    /// <remarks>
    /// The blocker is the owner of the first conflicting lock the requester's own descriptor reports (the one
    /// the kernel would make it wait for): from that owner's descriptor the same lock is no longer reported, since a
    /// description never conflicts with itself. A lock of a host process, or two owners holding the very same range,
    /// leave it unknown.
    /// </remarks>
    public int GetLockBlockers(in FuseContext ctx, NodeId node, in LkIn args, Span<ulong> owners)
    {
        if (owners.IsEmpty || (args.LkFlags & FuseConstants.LkFlock) != 0) return 0;
        if (GetFile(node, args.Fh, dir: false, out var file).IsError) return 0;
        if (ToFlock(args.Lk, out var request).IsError || request.Type == Libc.F_UNLCK) return 0;
        var n = file!.Node;
        lock (n)
        {
            if (n.LockFds is null || !n.LockFds.TryGetValue(args.Owner, out var mine)) return 0;
            var conflict = request;
            if (Libc.fcntl(mine, Libc.F_OFD_GETLK, ref conflict) != 0 || conflict.Type == Libc.F_UNLCK) return 0;
            return FindHolder(n, args.Owner, request, conflict, out owners[0]) ? 1 : 0;
        }
    }

    /// <inheritdoc/>
    public Errno SetLk(in FuseContext ctx, NodeId node, in LkIn args, bool wait)
    {
        if ((args.LkFlags & FuseConstants.LkFlock) != 0)
        {
            // flock(2) locks belong to the open file description: exactly the guest's open file (one fh).
            if (!_files.TryGetValue(args.Fh, out var f) || f.Node.Id != node.Value) return Errno.EBADF;
            var op = args.Lk.Type switch
            {
                (uint)Libc.F_RDLCK => Libc.LOCK_SH,
                (uint)Libc.F_WRLCK => Libc.LOCK_EX,
                (uint)Libc.F_UNLCK => Libc.LOCK_UN,
                _ => -1,
            };
            if (op < 0) return Errno.EINVAL;
            if (!wait) op |= Libc.LOCK_NB;
            return Libc.flock(f.Fd, op) == 0 ? Errno.Ok : LastErrno();
        }

        var err = GetFile(node, args.Fh, dir: false, out var file);
        if (err.IsError) return err;
        err = ToFlock(args.Lk, out var fl);
        if (err.IsError) return err;
        err = CheckLockAccess(file!, args.Lk.Type);
        if (err.IsError) return err;
        err = OwnerLockFd(file!, args.Owner, create: fl.Type != Libc.F_UNLCK, out var fd);
        if (err.IsError) return err;
        if (fd is null) return Errno.Ok; // unlocking what this owner never locked
        try
        {
            if (Libc.fcntl(fd, wait ? Libc.F_OFD_SETLKW : Libc.F_OFD_SETLK, ref fl) != 0) return LastErrno();
            if (fl.Type != Libc.F_UNLCK)
            {
                var n = file!.Node;
                lock (n) (n.LockPids ??= new Dictionary<ulong, uint>())[args.Owner] = args.Lk.Pid;
            }
            return Errno.Ok;
        }
        catch (ObjectDisposedException)
        {
            // The owner's descriptor was closed by a concurrent FLUSH: its locks are gone, as after close(2).
            return Errno.EBADF;
        }
    }
}
