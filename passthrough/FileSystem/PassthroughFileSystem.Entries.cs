using System.Runtime.InteropServices;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Interop;
using Hypervisor.Protocol.Fuse;

namespace Hypervisor.Passthrough.FileSystem;

public sealed partial class PassthroughFileSystem
{
    /// <inheritdoc/>
    public Result<EntryOut> Lookup(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name)
    {
        var check = CheckName(name);
        if (check.IsError) return check;
        var err = Acquire(parent, out var parentNode, out var lease);
        if (err.IsError) return err;
        using (lease)
        {
            if (!parentNode!.IsDir) return Errno.ENOTDIR;
            var entry = IsDot(name) || (IsDotDot(name) && parentNode == _root)
                ? AddLookup(parentNode, lease.Fd)
                : LookupAt(lease.Fd, parentNode.Id, name, checkAllowlist: true);
            if (entry.IsOk) JournalLookup(ctx, entry.Value.Nodeid);
            return entry;
        }
    }

    /// <summary>LOOKUP of "." (and ".." at the root): the same node, one more lookup.</summary>
    private Result<EntryOut> AddLookup(Node node, SafeFd fd)
    {
        if (Libc.fstat(fd, out var st) != 0) return LastErrno();
        lock (_inodes[Stripe(node.Key)])
        {
            if (node.Dropped) return Errno.ENOENT;
            node.Lookups++;
            StoreLookups(node);
        }
        return MakeEntry(node, st);
    }

    /// <summary>
    /// Resolves one checked component below <paramref name="dirFd"/> without following a symlink and returns its
    /// entry with one more lookup counted. <paramref name="name"/> has no NUL. The new descriptor stays a raw int
    /// unless the cache keeps it, so a LOOKUP of a known, cached node allocates nothing. <paramref name="created"/>
    /// says the name was just made for a new inode (MKNOD, MKDIR, SYMLINK), which no node can know yet.
    /// <paramref name="dirId"/> is the node id of the directory behind <paramref name="dirFd"/>: a node without a file
    /// handle is recorded in the state store by that parent and the name.
    /// </summary>
    private Result<EntryOut> LookupAt(SafeFd dirFd, ulong dirId, ReadOnlySpan<byte> name, bool checkAllowlist, bool created = false)
    {
        Span<byte> buffer = stackalloc byte[MaxName + 1];
        var cname = CString(name, buffer);
        if (_useHandles && !created && !(checkAllowlist && _settings.Allowlist is not null))
        {
            // An inode whose descriptor the cache has held since before this fstatat is known by its number alone:
            // one syscall instead of an open, a stat and a close (see FdCache).
            var ticket = _fdCache.Ticket;
            if (Libc.fstatat(dirFd, cname, out var seen, Libc.AT_SYMLINK_NOFOLLOW) != 0) return LastErrno();
            var key = new InodeKey(seen.Dev, seen.Ino);
            var stripe = _inodes[Stripe(key)];
            Node? known;
            lock (stripe) stripe.TryGetValue(key, out known);
            if (known is not null && _fdCache.TryCountLookup(known, ticket, _countKnownLookup))
            {
                if (known.ByName) NameAgain(known, dirId, name);
                return MakeEntry(known, seen);
            }
        }
        var fd = OpenAt(dirFd, cname, Libc.O_PATH | Libc.O_NOFOLLOW | Libc.O_CLOEXEC);
        if (fd < 0) return LastErrno();
        if (Libc.fstat(fd, out var st) != 0)
        {
            var errno = LastErrno();
            Libc.close(fd);
            return errno;
        }
        if (checkAllowlist && CheckReach(fd).IsError)
        {
            Libc.close(fd);
            return Errno.ENOENT;
        }
        var err = Intern(fd, st, dirId, name, out var node);
        return err.IsError ? err : MakeEntry(node!, st);
    }

    /// <summary>
    /// Finds or creates the node of the inode behind <paramref name="pathFd"/> (a raw O_PATH descriptor whose
    /// ownership passes to this method) and counts one lookup. With <c>--inode-file-handles=mandatory</c> a new node
    /// gets its file handle at once, and an inode without one is refused with the errno of <c>name_to_handle_at</c>
    /// (the descriptor is closed). The inode was found as <paramref name="name"/> in directory node
    /// <paramref name="parent"/>: a node recorded by name (<see cref="Node.ByName"/>) is recorded under it from now on.
    /// </summary>
    private Errno Intern(int pathFd, in Stat st, ulong parent, ReadOnlySpan<byte> name, out Node? interned)
    {
        interned = InternNode(pathFd, st, parent, name, out var err);
        return err;
    }

    private Node? InternNode(int pathFd, in Stat st, ulong parent, ReadOnlySpan<byte> name, out Errno err)
    {
        err = Errno.Ok;
        var key = new InodeKey(st.Dev, st.Ino);
        var stripe = _inodes[Stripe(key)];
        Node? node;
        lock (stripe)
        {
            if (stripe.TryGetValue(key, out node))
            {
                CountLookup(node);
                if (node.ByName) StoreName(node, parent, name);
            }
        }
        if (node is not null)
        {
            // A node without a handle holds a descriptor (cached or pinned, or its creator's until it is cached), so
            // its inode is alive and the number is its own; only a node that gave its descriptor up is compared.
            var handle = node.Handle;
            if (handle is null || _fdCache.IsCached(node) || HandleMatches(pathFd, handle))
            {
                KeepDescriptor(node, pathFd);
                return node;
            }
            // The node's inode was freed (nothing of ours held it open) and its number now belongs to a new inode:
            // the old node stays valid under its id for the lookups the client holds (its handle now gives ESTALE),
            // but it no longer stands for this inode number.
            bool orphaned;
            lock (stripe)
            {
                node.Lookups--;
                StoreLookups(node);
                if (stripe.TryGetValue(key, out var mapped) && mapped == node) stripe.Remove(key);
                orphaned = node.Lookups == 0 && !node.Dropped; // a retired node this call revived: nobody knows it
                if (orphaned)
                {
                    node.Dropped = true;
                    ReleaseSlot(node);
                    _nodes.TryRemove(node.Id, out _);
                }
            }
            if (orphaned) _fdCache.Remove(node);
            node = null;
        }

        var owned = new SafeFd(pathFd);
        var type = st.Mode & Libc.S_IFMT;
        byte[]? madeHandle = null;
        SafeFd? handleMount = null;
        if (_mandatoryHandles)
        {
            madeHandle = MakeHandle(owned, type, out handleMount, out var errno);
            if (madeHandle is null)
            {
                owned.Dispose();
                err = new Errno(errno);
                return null;
            }
        }
        else if (_store is not null && _useHandles)
        {
            // A daemon started after a crash reopens the node by this handle: it is taken now, once per new node,
            // rather than when the cache first evicts the descriptor. Null (another mount): the node is not restorable.
            madeHandle = MakeHandle(owned, type, out handleMount, out _);
        }
        var candidate = new Node(NewNodeId(), key, type, _useHandles ? null : owned)
        {
            Handle = madeHandle,
            MountFd = handleMount,
            IsMountRoot = _announceSubmounts && type == Libc.S_IFDIR && Libc.IsMountRoot(owned, out _),
        };
        lock (stripe)
        {
            if (stripe.TryGetValue(key, out node))
            {
                CountLookup(node);
                if (node.ByName) StoreName(node, parent, name);
            }
            else
            {
                candidate.Lookups = 1;
                RecordNode(candidate, parent, name);
                stripe.Add(key, candidate);
                _nodes[candidate.Id] = candidate;
            }
        }
        if (node is not null)
        {
            // Lost a race with another LOOKUP of the same inode: its node wins.
            if (node.Pinned is null) _fdCache.Adopt(node, owned);
            else owned.Dispose();
            return node;
        }
        if (_useHandles) _fdCache.Adopt(candidate, owned);
        return candidate;
    }

    /// <summary>One more lookup of a node in the inode table; a retired node becomes known to the client again.
    /// The caller holds the node's stripe lock.</summary>
    private void CountLookup(Node node)
    {
        if (node.Lookups == 0) _nodes[node.Id] = node;
        node.Lookups++;
        StoreLookups(node);
    }

    /// <summary>Marks a node dropped and takes it out of the inode table. The caller holds its stripe lock.</summary>
    private void Unmap(Dictionary<InodeKey, Node> stripe, Node node)
    {
        node.Dropped = true;
        ReleaseSlot(node);
        if (stripe.TryGetValue(node.Key, out var mapped) && mapped == node) stripe.Remove(node.Key);
    }

    /// <summary>
    /// <see cref="FdCache.TryCountLookup"/>'s callback (under the cache lock): counts a lookup of a node the
    /// <c>fstatat</c> fast path found, unless the node left the inode table meanwhile.
    /// </summary>
    private bool CountKnownLookup(Node node)
    {
        var stripe = _inodes[Stripe(node.Key)];
        lock (stripe)
        {
            if (node.Dropped || !stripe.TryGetValue(node.Key, out var mapped) || mapped != node) return false;
            CountLookup(node);
            return true;
        }
    }

    /// <summary>
    /// The fd cache's eviction callback (under the cache lock). A retired node goes with its descriptor. A live node
    /// without a handle gets one made from the descriptor before it is closed; if none can be made (no handles on
    /// that filesystem, or another mount) the node keeps the descriptor as its pinned one.
    /// </summary>
    private bool Evicting(Node victim, SafeFd fd)
    {
        if (victim.Dropped) return true;
        var stripe = _inodes[Stripe(victim.Key)];
        lock (stripe)
        {
            if (victim.Dropped) return true;
            if (victim.Lookups == 0)
            {
                Unmap(stripe, victim);
                return true;
            }
        }
        if (victim.Handle is not null) return true;
        if (MakeHandle(fd, victim.Type, out var mountFd, out _) is { } handle)
        {
            victim.MountFd = mountFd;
            victim.Handle = handle;
            return true;
        }
        victim.Pinned = fd;
        return false;
    }

    /// <summary>
    /// Whether the inode behind <paramref name="fd"/> has <paramref name="handle"/>. Needed only when the node holds
    /// no descriptor: a held descriptor keeps its inode alive, so its number cannot have been reused.
    /// </summary>
    private static bool HandleMatches(int fd, byte[] handle)
    {
        Span<byte> buffer = stackalloc byte[8 + Libc.MAX_HANDLE_SZ];
        MemoryMarshal.Write(buffer, Libc.MAX_HANDLE_SZ);
        if (Libc.name_to_handle_at(fd, "\0"u8, buffer, out _, Libc.AT_EMPTY_PATH) != 0) return true;
        var bytes = MemoryMarshal.Read<int>(buffer);
        return buffer[..(8 + bytes)].SequenceEqual(handle);
    }

    private void KeepDescriptor(Node node, int pathFd)
    {
        if (node.Pinned is null) _fdCache.AdoptRaw(node, pathFd);
        else Libc.close(pathFd);
    }

    /// <summary>
    /// The file handle of the inode behind <paramref name="fd"/>, with the descriptor it decodes against in
    /// <paramref name="mountFd"/> (null: the share's own mount). Null, with the errno, when the filesystem has no
    /// handles (EOPNOTSUPP), or when the inode lies on another mount and either the mode is prefer (its node pins its
    /// descriptor) or the daemon does not hold a descriptor of that mount yet and cannot take one from this inode (only
    /// a directory or a regular file can be opened for it); then EXDEV.
    /// </summary>
    private byte[]? MakeHandle(SafeFd fd, uint type, out SafeFd? mountFd, out int errno)
    {
        mountFd = null;
        Span<byte> buffer = stackalloc byte[8 + Libc.MAX_HANDLE_SZ];
        MemoryMarshal.Write(buffer, Libc.MAX_HANDLE_SZ);
        if (Libc.name_to_handle_at(fd, "\0"u8, buffer, out var mountId, Libc.AT_EMPTY_PATH) != 0)
        {
            errno = Libc.LastErrno;
            return null;
        }
        if (mountId != _rootMountId)
        {
            // prefer pins the node's descriptor instead, which holds the mount only while the guest knows the node.
            mountFd = _mandatoryHandles ? MountDescriptor(mountId, fd, type) : null;
            if (mountFd is null)
            {
                errno = 18; // EXDEV
                return null;
            }
        }
        errno = 0;
        var bytes = MemoryMarshal.Read<int>(buffer);
        return buffer[..(8 + bytes)].ToArray();
    }

    /// <summary>
    /// A descriptor of the mount <paramref name="mountId"/> below the share, for open_by_handle_at (the kernel
    /// refuses an O_PATH one): the first directory or regular file met on that mount is opened read-only through its
    /// O_PATH descriptor and kept for the daemon's lifetime (one per submount, with --inode-file-handles=mandatory
    /// only: it keeps the host from unmounting that mount, except lazily, while the daemon runs).
    /// </summary>
    private SafeFd? MountDescriptor(int mountId, SafeFd fd, uint type)
    {
        if (_mountFds.TryGetValue(mountId, out var known)) return known;
        int opened;
        if (type == Libc.S_IFDIR) opened = Libc.openat(fd, ".\0"u8, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        else if (type == Libc.S_IFREG)
        {
            // Not Reopen: this runs under the fd cache's lock (eviction), where making room would re-enter the cache.
            Span<byte> proc = stackalloc byte[ProcPath.Size];
            opened = Libc.openat(Libc.AT_FDCWD, ProcPath.Format(fd.Value, proc), Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        }
        else return null;
        if (opened < 0) return null;
        var mount = new SafeFd(opened);
        if (_mountFds.TryAdd(mountId, mount)) return mount;
        mount.Dispose();
        return _mountFds.TryGetValue(mountId, out known) ? known : null;
    }

    /// <inheritdoc/>
    public void Forget(NodeId node, ulong count)
    {
        if (node.Value == FuseConstants.RootId) return;
        var n = FindNode(node);
        if (n is null) return;
        var stripe = _inodes[Stripe(n.Key)];
        lock (stripe)
        {
            if (n.Dropped || n.Lookups == 0) return;
            n.Lookups = count >= (ulong)n.Lookups ? 0 : n.Lookups - (long)count;
            StoreLookups(n);
            if (n.Lookups > 0) return;
            _nodes.TryRemove(n.Id, out _);
            if (n.Pinned is not null) Unmap(stripe, n);
        }
        n.DropLockFds(_kept);
        if (!n.Dropped)
        {
            // Retired: the node stays in the inode table while the cache holds its descriptor (a new LOOKUP of the
            // inode then needs no open). An inode with no name left goes now, so that its space is freed as on a
            // local filesystem; so does a node whose descriptor the cache has already given up.
            if (_fdCache.TryLease(n, out var lease))
            {
                using (lease)
                {
                    if (Libc.fstat(lease.Fd, out var st) == 0 && st.Nlink > 0) return;
                }
            }
            lock (stripe)
            {
                if (n.Dropped || n.Lookups > 0) return; // evicted, or looked up again, meanwhile
                Unmap(stripe, n);
            }
        }
        _fdCache.Remove(n);
        n.Pinned?.Dispose();
        Log.NodeDropped(_logger, n.Id);
    }

    /// <inheritdoc/>
    public Result<AttrOut> GetAttr(in FuseContext ctx, NodeId node, FileHandle? handle)
    {
        Stat st;
        if (handle is { } fh)
        {
            if (!_files.TryGetValue(fh.Value, out var file) || file.Node.Id != node.Value) return Errno.EBADF;
            if (Libc.fstat(file.Fd, out st) != 0) return LastErrno();
            return MakeAttrOut(st);
        }
        var err = Acquire(node, out _, out var lease);
        if (err.IsError) return err;
        using (lease)
        {
            if (Libc.fstat(lease.Fd, out st) != 0) return LastErrno();
        }
        return MakeAttrOut(st);
    }

    /// <inheritdoc/>
    public Result<AttrOut> SetAttr(in FuseContext ctx, NodeId node, in SetAttrIn args)
    {
        if (ReadOnly) return Errno.EROFS;
        var valid = (SetAttrValid)args.Valid;
        OpenFile? file = null;
        if ((valid & SetAttrValid.Fh) != 0)
        {
            if (!_files.TryGetValue(args.Fh, out file) || file.IsDir || file.Node.Id != node.Value) return Errno.EBADF;
        }
        var err = Acquire(node, out var n, out var lease);
        if (err.IsError) return err;
        using (lease)
        {
            Span<byte> procBuffer = stackalloc byte[ProcPath.Size];
            var proc = ProcPath.Format(lease.Fd.Value, procBuffer);

            if ((valid & SetAttrValid.Mode) != 0)
            {
                // chmod of a symlink is not supported on Linux (fchmodat with AT_SYMLINK_NOFOLLOW says so).
                if (n!.IsSymlink) return Errno.EOPNOTSUPP;
                var mode = args.Mode & 0xFFF;
                var r = file is not null ? Libc.fchmod(file.Fd, mode) : Libc.fchmodat(Libc.AT_FDCWD, proc, mode, 0);
                if (r != 0) return LastErrno();
            }

            if ((valid & (SetAttrValid.Uid | SetAttrValid.Gid)) != 0)
            {
                // lchown semantics: the inode itself, never a symlink's target. The host kernel clears
                // set-user-ID/set-group-ID on chown of a regular file as it would locally.
                // Both owners are the guest's: a forbid-guest rule refuses giving one of its ids (EPERM, as virtiofsd).
                var uid = uint.MaxValue;
                var gid = uint.MaxValue;
                if ((valid & SetAttrValid.Uid) != 0 && !_uids.TryToHost(args.Uid, out uid)) return Errno.EPERM;
                if ((valid & SetAttrValid.Gid) != 0 && !_gids.TryToHost(args.Gid, out gid)) return Errno.EPERM;
                if (Libc.fchownat(lease.Fd, "\0"u8, uid, gid, Libc.AT_EMPTY_PATH | Libc.AT_SYMLINK_NOFOLLOW) != 0) return LastErrno();
            }

            if ((valid & SetAttrValid.Size) != 0)
            {
                if (n!.IsDir) return Errno.EISDIR;
                if (!n.IsRegular) return Errno.EINVAL;
                if (args.Size > long.MaxValue) return Errno.EINVAL;
                var r = file is not null ? Libc.ftruncate(file.Fd, (long)args.Size) : Libc.truncate(proc, (long)args.Size);
                if (r != 0) return LastErrno();
                if ((valid & SetAttrValid.KillSuidGid) != 0) KillSuidGid(lease.Fd, HostGidOrNone(ctx.Gid));
            }

            if ((valid & (SetAttrValid.ATime | SetAttrValid.MTime)) != 0)
            {
                Span<Timespec> times = stackalloc Timespec[2];
                times[0] = TimeFor(valid, SetAttrValid.ATime, SetAttrValid.ATimeNow, args.Atime, args.Atimensec);
                times[1] = TimeFor(valid, SetAttrValid.MTime, SetAttrValid.MTimeNow, args.Mtime, args.Mtimensec);
                var r = file is not null
                    ? Libc.futimens(file.Fd, times)
                    : Libc.utimensat(lease.Fd, "\0"u8, times, Libc.AT_EMPTY_PATH | Libc.AT_SYMLINK_NOFOLLOW);
                if (r != 0) return LastErrno();
            }

            if (Libc.fstat(lease.Fd, out var st) != 0) return LastErrno();
            return MakeAttrOut(st);
        }
    }

    private static Timespec TimeFor(SetAttrValid valid, SetAttrValid set, SetAttrValid now, ulong sec, uint nsec)
    {
        if ((valid & set) == 0) return new Timespec { Sec = 0, Nsec = Libc.UTIME_OMIT };
        if ((valid & now) != 0) return new Timespec { Sec = 0, Nsec = Libc.UTIME_NOW };
        if (nsec >= 1_000_000_000) nsec = 999_999_999;
        return new Timespec { Sec = (long)sec, Nsec = nsec };
    }

    /// <inheritdoc/>
    public Result<int> ReadLink(in FuseContext ctx, NodeId node, Span<byte> destination)
    {
        var err = Acquire(node, out var n, out var lease);
        if (err.IsError) return err;
        using (lease)
        {
            if (!n!.IsSymlink) return Errno.EINVAL;
            var r = Libc.readlinkat(lease.Fd, "\0"u8, destination, (nuint)destination.Length);
            if (r < 0) return LastErrno();
            return (int)r;
        }
    }

    /// <summary>
    /// Validates a name for an operation that creates it (mkdir, mknod, symlink, link): "." and ".." exist already,
    /// so Linux answers EEXIST for them, as it does here.
    /// </summary>
    private static Errno CheckNewName(ReadOnlySpan<byte> name)
    {
        var check = CheckName(name);
        if (check.IsError) return check;
        return IsDots(name) ? Errno.EEXIST : Errno.Ok;
    }

    private Errno AcquireDir(NodeId parent, out FdLease lease)
    {
        var err = Acquire(parent, out var node, out lease);
        if (err.IsError) return err;
        if (!node!.IsDir)
        {
            lease.Dispose();
            lease = default;
            return Errno.ENOTDIR;
        }
        return Errno.Ok;
    }

    /// <summary>Switches to the caller's fsuid/fsgid (translated to host ids) for a creating call. Capture the call's
    /// errno inside the scope: restoring the credentials is itself a call and the saved errno does not survive it.
    /// EPERM when a forbid-guest rule covers the caller's uid, gid or supplementary group, as virtiofsd answers.</summary>
    private Errno AsCaller(in FuseContext ctx, out Credentials credentials)
    {
        if (!TryHostIds(ctx, out var uid, out var gid, out var suppGid))
        {
            credentials = default;
            return Errno.EPERM;
        }
        credentials = Credentials.Enter(_switchCredentials && (uid != 0 || gid != 0), uid, gid, suppGid, _logger);
        return Errno.Ok;
    }

    /// <inheritdoc/>
    public Result<EntryOut> Symlink(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, ReadOnlySpan<byte> target) =>
        MakeNode(ctx, parent, name, FuseOpcode.Symlink, 0, 0, target, SymlinkTargetCheck(target), 0, default);

    /// <inheritdoc/>
    public Result<EntryOut> MkNod(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, in MkNodIn args) =>
        MakeNode(ctx, parent, name, FuseOpcode.MkNod, args.Mode & (Libc.S_IFMT | 0xFFF), args.Rdev, default, MkNodCheck(args.Mode), args.Umask, default);

    /// <inheritdoc/>
    public Result<EntryOut> MkDir(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, in MkDirIn args) =>
        MakeNode(ctx, parent, name, FuseOpcode.MkDir, args.Mode & 0xFFF, 0, default, Errno.Ok, args.Umask, default);

    private static Errno SymlinkTargetCheck(ReadOnlySpan<byte> target) =>
        target.IsEmpty ? Errno.ENOENT : target.Length >= PathMax ? Errno.ENAMETOOLONG : target.IndexOf((byte)0) >= 0 ? Errno.EINVAL : Errno.Ok;

    private static Errno MkNodCheck(uint mode) =>
        (mode & Libc.S_IFMT) is 0 or Libc.S_IFREG or Libc.S_IFIFO or Libc.S_IFSOCK or Libc.S_IFCHR or Libc.S_IFBLK ? Errno.Ok : Errno.EINVAL;

    /// <summary>
    /// SYMLINK, MKNOD and MKDIR: checks (read-only share, the name, then <paramref name="invalid"/>, the operation's
    /// own argument check), creates the inode as the caller (with <paramref name="umask"/> under DONT_MASK), labels it
    /// with <paramref name="label"/> or removes it again, and looks it up.
    /// </summary>
    private Result<EntryOut> MakeNode(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, FuseOpcode op, uint mode, uint rdev,
        ReadOnlySpan<byte> target, Errno invalid, uint umask, SecurityContext label)
    {
        if (ReadOnly) return Errno.EROFS;
        var check = CheckNewName(name);
        if (check.IsError) return check;
        if (invalid.IsError) return invalid;
        var err = AcquireDir(parent, out var lease);
        if (err.IsError) return err;
        using (lease)
        {
            var reach = CheckChild(lease.Fd, name, ChildUse.Create);
            if (reach.IsError) return reach;
            Span<byte> nameBuffer = stackalloc byte[MaxName + 1];
            Span<byte> targetBuffer = stackalloc byte[op == FuseOpcode.Symlink ? PathMax : 0];
            var cname = CString(name, nameBuffer);
            var failure = Errno.Ok;
            if (op != FuseOpcode.Symlink) mode = CreationMode(mode, umask);
            var asCaller = AsCaller(ctx, out var credentials);
            if (asCaller.IsError) return asCaller;
            using (credentials)
            {
                var r = op switch
                {
                    FuseOpcode.Symlink => Libc.symlinkat(CString(target, targetBuffer), lease.Fd, cname),
                    FuseOpcode.MkDir => Libc.mkdirat(lease.Fd, cname, mode),
                    _ => Libc.mknodat(lease.Fd, cname, mode, rdev),
                };
                if (r != 0) failure = LastErrno();
            }
            if (failure.IsError) return failure;
            if (!label.IsEmpty)
            {
                var labelled = Label(lease.Fd, cname, label);
                if (labelled.IsError)
                {
                    Unmake(lease.Fd, cname, op == FuseOpcode.MkDir);
                    return labelled;
                }
            }
            return LookupAt(lease.Fd, parent.Value, name, checkAllowlist: false, created: true);
        }
    }

    /// <inheritdoc/>
    public Errno Unlink(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name) => Remove(parent, name, 0);

    /// <inheritdoc/>
    public Errno RmDir(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name) => Remove(parent, name, Libc.AT_REMOVEDIR);

    /// <summary>UNLINK (<paramref name="flags"/> 0) and RMDIR (AT_REMOVEDIR): <c>unlinkat</c> of a visible name.</summary>
    private Errno Remove(NodeId parent, ReadOnlySpan<byte> name, int flags)
    {
        if (ReadOnly) return Errno.EROFS;
        var check = CheckName(name);
        if (check.IsError) return check;
        // unlink(2) of "." or ".." is EISDIR on Linux (they are directories); rmdir(2) of "." is EINVAL, of ".." ENOTEMPTY.
        if (IsDots(name)) return flags == 0 ? Errno.EISDIR : IsDot(name) ? Errno.EINVAL : Errno.ENOTEMPTY;
        var err = AcquireDir(parent, out var lease);
        if (err.IsError) return err;
        using (lease)
        {
            var reach = CheckChild(lease.Fd, name, ChildUse.Existing);
            if (reach.IsError) return reach;
            Span<byte> nameBuffer = stackalloc byte[MaxName + 1];
            return Libc.unlinkat(lease.Fd, CString(name, nameBuffer), flags) == 0 ? Errno.Ok : LastErrno();
        }
    }

    /// <inheritdoc/>
    public Errno Rename(in FuseContext ctx, NodeId parent, ReadOnlySpan<byte> name, NodeId newParent, ReadOnlySpan<byte> newName, uint flags)
    {
        if (ReadOnly) return Errno.EROFS;
        const uint known = FuseConstants.RenameNoReplace | FuseConstants.RenameExchange | FuseConstants.RenameWhiteout;
        if ((flags & ~known) != 0) return Errno.EINVAL;
        var check = CheckName(name);
        if (check.IsError) return check;
        check = CheckName(newName);
        if (check.IsError) return check;
        // renameat2(2): a "." or ".." source is EBUSY; as a target EEXIST with RENAME_NOREPLACE, else EBUSY.
        if (IsDots(name)) return Errno.EBUSY;
        if (IsDots(newName)) return (flags & FuseConstants.RenameNoReplace) != 0 ? Errno.EEXIST : Errno.EBUSY;
        var err = Acquire(parent, out var oldDir, out var oldLease);
        if (err.IsError) return err;
        using (oldLease)
        {
            if (!oldDir!.IsDir) return Errno.ENOTDIR;
            err = Acquire(newParent, out var newDir, out var newLease);
            if (err.IsError) return err;
            using (newLease)
            {
                if (!newDir!.IsDir) return Errno.ENOTDIR;
                var reach = CheckChild(oldLease.Fd, name, ChildUse.Existing);
                if (reach.IsError) return reach;
                var exchange = (flags & FuseConstants.RenameExchange) != 0;
                reach = CheckChild(newLease.Fd, newName, exchange ? ChildUse.Exchange : ChildUse.Replace);
                if (reach.IsError) return reach;
                Span<byte> oldBuffer = stackalloc byte[MaxName + 1];
                Span<byte> newBuffer = stackalloc byte[MaxName + 1];
                var oldC = CString(name, oldBuffer);
                var newC = CString(newName, newBuffer);
                // Nodes recorded by name follow the rename in the store. A rename never crosses a mount, so in a
                // directory whose node has a handle on the share's mount every child has one too: nothing to do there.
                Node? moved = null, swapped = null;
                if (_store is not null && (!_useHandles || oldDir.ByName || newDir.ByName))
                {
                    moved = StageRename(oldLease.Fd, oldC, newDir.Id, newName);
                    if (exchange) swapped = StageRename(newLease.Fd, newC, oldDir.Id, name);
                }
                if (Libc.renameat2(oldLease.Fd, oldC, newLease.Fd, newC, flags) != 0) return LastErrno();
                if (moved is not null) NameAgain(moved, newDir.Id, newName);
                if (swapped is not null) NameAgain(swapped, oldDir.Id, name);
                return Errno.Ok;
            }
        }
    }

    /// <inheritdoc/>
    public Result<EntryOut> Link(in FuseContext ctx, NodeId node, NodeId newParent, ReadOnlySpan<byte> newName)
    {
        if (ReadOnly) return Errno.EROFS;
        var check = CheckNewName(newName);
        if (check.IsError) return check;
        var err = Acquire(node, out var n, out var lease);
        if (err.IsError) return err;
        using (lease)
        {
            // link(2) of a directory is EPERM on Linux.
            if (n!.IsDir) return Errno.EPERM;
            err = AcquireDir(newParent, out var dirLease);
            if (err.IsError) return err;
            using (dirLease)
            {
                var reach = CheckChild(dirLease.Fd, newName, ChildUse.Create);
                if (reach.IsError) return reach;
                Span<byte> procBuffer = stackalloc byte[ProcPath.Size];
                Span<byte> nameBuffer = stackalloc byte[MaxName + 1];
                // Linking the magic link of the O_PATH descriptor links the inode itself (AT_EMPTY_PATH would
                // need CAP_DAC_READ_SEARCH; this works for any daemon user).
                var r = Libc.linkat(Libc.AT_FDCWD, ProcPath.Format(lease.Fd.Value, procBuffer), dirLease.Fd,
                    CString(newName, nameBuffer), Libc.AT_SYMLINK_FOLLOW);
                if (r != 0) return LastErrno();
                return LookupAt(dirLease.Fd, newParent.Value, newName, checkAllowlist: false);
            }
        }
    }
}
