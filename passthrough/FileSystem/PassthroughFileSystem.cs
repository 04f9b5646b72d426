using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using System.Text;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Interop;
using Hypervisor.Passthrough.Share;
using Hypervisor.Protocol.Share;
using Hypervisor.Protocol.Fuse;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough.FileSystem;

/// <summary>
/// Serves FUSE requests on a host directory with POSIX calls, strictly inside it.
/// <list type="bullet">
/// <item>Every name is resolved relative to a descriptor of its parent, one component at a time, with
/// <c>openat(O_PATH|O_NOFOLLOW)</c>; symlinks are never followed, ".." of the root is the root.</item>
/// <item>Inodes are identified by file handle (<c>name_to_handle_at</c>, reopened with <c>open_by_handle_at</c>
/// against a descriptor of the share's mount, which needs CAP_DAC_READ_SEARCH); a bounded LRU keeps their O_PATH
/// descriptors. Where the filesystem has no handles (or the daemon is not root) a node pins an O_PATH descriptor.
/// Node ids come from a 64-bit counter that is never reset, so an id is never reused, not even across sessions;
/// the entry generation is the session number.</item>
/// <item>Files are opened for I/O only when they are regular files (directories through OPENDIR): by reopening
/// <c>/proc/self/fd/N</c> of the node's O_PATH descriptor, never through a path built from guest bytes. OPEN of a
/// FIFO, socket or device answers ENXIO: the guest kernel serves those inodes itself, so such an OPEN only comes
/// from a client bypassing it, and the daemon must neither block on a FIFO nor touch a host device.</item>
/// <item>Creating operations run with the thread's fsuid/fsgid set to the caller's, so new inodes belong to the
/// caller and a setgid parent's group is inherited as on a local filesystem. Each worker thread gets its own
/// umask of 0 (<c>unshare(CLONE_FS)</c>) because the guest kernel has already applied the caller's umask. With
/// FUSE_CREATE_SUPP_GROUP they also take the caller's supplementary group that owns the parent. The caller's ids,
/// SETATTR's owners and every reply's owners go through <c>--translate-uid</c>/<c>--translate-gid</c>.</item>
/// <item>POSIX locks are OFD locks on one descriptor per (node, lock owner): locks of one owner never conflict
/// with each other, different owners conflict, and FLUSH from an owner (a close(2) in the guest) releases that
/// owner's locks, which is what POSIX asks of fcntl locks. SETLKW blocks its worker thread in F_OFD_SETLKW until
/// the lock is granted (the engine serves requests on a pool, so other requests proceed).</item>
/// </list>
/// </summary>
public sealed partial class PassthroughFileSystem : IFileSystem, IDisposable
{
    private const int Stripes = 64;
    private const int MaxName = 255;
    private const int PathMax = 4096;

    private readonly LiveSettings _settings;
    private readonly ShareSettings _options;
    private readonly ILogger _logger;

    private readonly SafeFd _rootFd;
    private readonly SafeFd _mountFd;
    private readonly Node _root;
    private readonly string _rootPath;
    private readonly byte[] _rootPathBytes;
    private readonly bool _useHandles;
    private readonly int _rootMountId;
    private readonly bool _switchCredentials;
    private readonly IdMap _uids;
    private readonly IdMap _gids;
    private readonly bool _xattr;
    private readonly XattrMap? _xattrMap;
    private readonly bool _mandatoryHandles;
    private readonly bool _announceSubmounts;
    private readonly ConcurrentDictionary<int, SafeFd> _mountFds = new();

    private readonly ConcurrentDictionary<ulong, Node> _nodes = new();
    private readonly Dictionary<InodeKey, Node>[] _inodes = new Dictionary<InodeKey, Node>[Stripes];
    private readonly ConcurrentDictionary<ulong, OpenFile> _files = new();
    private readonly FdCache _fdCache;
    private readonly Func<Node, bool> _countKnownLookup;

    private long _nextNodeId = 1;
    private long _nextFh;
    private long _generation;
    private long _bytesRead;
    private long _bytesWritten;
    private InitFlags _negotiated;

    /// <summary>
    /// Opens the share's directory. Throws <see cref="DirectoryNotFoundException"/> / <see cref="IOException"/> /
    /// <see cref="UnauthorizedAccessException"/> with a sentence saying what to change when it is missing, not a
    /// directory or not accessible.
    /// </summary>
    public PassthroughFileSystem(LiveSettings settings, ILogger logger) : this(settings, logger, allowFileHandles: true)
    {
    }

    /// <summary>
    /// Serves the share found at <paramref name="root"/>: <c>/</c> for a sandboxed daemon, whose root the shared
    /// directory has become; the settings keep the host path the operator gave.
    /// </summary>
    public PassthroughFileSystem(LiveSettings settings, ILogger logger, string root) : this(settings, logger, allowFileHandles: true, root)
    {
    }

    /// <summary>
    /// With <paramref name="allowFileHandles"/> false every node pins an O_PATH descriptor, as on a filesystem
    /// without handles or for a daemon without CAP_DAC_READ_SEARCH (tests use it to cover that mode as root).
    /// </summary>
    internal PassthroughFileSystem(LiveSettings settings, ILogger logger, bool allowFileHandles, string? root = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(logger);
        _settings = settings;
        _options = settings.Options;
        _logger = logger;
        (_xattr, _xattrMap) = XattrSettings(_options);
        var dir = root ?? _options.SharedDir;
        if (string.IsNullOrEmpty(dir))
            throw new ArgumentException("The shared directory is empty; set --shared-dir to an existing host directory.", nameof(settings));
        var fdCacheSize = _options.HasFdCacheSize ? (int)_options.FdCacheSize : DescriptorBudget.AutomaticCacheSize(DescriptorBudget.SoftLimit());
        if (fdCacheSize < 1)
            throw new ArgumentException($"The fd cache size {fdCacheSize} is too small; set it to at least 1 or leave it automatic.", nameof(settings));

        _uids = Translation(_options.TranslateUid, "--translate-uid");
        _gids = Translation(_options.TranslateGid, "--translate-gid");

        for (var i = 0; i < Stripes; i++) _inodes[i] = new Dictionary<InodeKey, Node>();
        _fdCache = new FdCache(fdCacheSize, Evicting);
        _countKnownLookup = CountKnownLookup;

        var pathBytes = Encoding.UTF8.GetBytes(dir + "\0");
        var fd = Libc.openat(Libc.AT_FDCWD, pathBytes, Libc.O_PATH | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        if (fd < 0)
        {
            var errno = Libc.LastErrno;
            throw errno switch
            {
                2 => new DirectoryNotFoundException($"The shared directory '{dir}' does not exist; create it or set --shared-dir to an existing directory."),
                20 => new IOException($"The shared directory '{dir}' is not a directory; set --shared-dir to a directory."),
                13 => new UnauthorizedAccessException($"The shared directory '{dir}' cannot be opened (permission denied); run the daemon as root or set --shared-dir to a directory it can open."),
                _ => new IOException($"The shared directory '{dir}' cannot be opened ({new Errno(errno)}); set --shared-dir to a readable local directory."),
            };
        }
        _rootFd = new SafeFd(fd);
        var mount = Libc.openat(_rootFd, ".\0"u8, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        if (mount < 0)
        {
            var errno = Libc.LastErrno;
            _rootFd.Dispose();
            throw new UnauthorizedAccessException($"The shared directory '{dir}' cannot be read ({new Errno(errno)}); give the daemon read access to it.");
        }
        _mountFd = new SafeFd(mount);
        Libc.fstat(_rootFd, out var st);
        _rootPath = ReadProcLink(fd) ?? Path.GetFullPath(dir);
        _rootPathBytes = Encoding.UTF8.GetBytes(_rootPath);

        // Handles are used only when this process can reopen them (CAP_DAC_READ_SEARCH); probe on the root.
        Span<byte> handle = stackalloc byte[8 + Libc.MAX_HANDLE_SZ];
        MemoryMarshal.Write(handle, Libc.MAX_HANDLE_SZ);
        // --inode-file-handles=never pins a descriptor per node; mandatory refuses to start without handles.
        var mode = _options.InodeFileHandles;
        var handleErrno = 0;
        if (mode != InodeFileHandles.Never && allowFileHandles)
        {
            if (Libc.name_to_handle_at(_rootFd, "\0"u8, handle, out _rootMountId, Libc.AT_EMPTY_PATH) == 0)
            {
                var probe = Libc.open_by_handle_at(_mountFd, handle, Libc.O_PATH | Libc.O_CLOEXEC);
                if (probe >= 0)
                {
                    Libc.close(probe);
                    _useHandles = true;
                }
                else handleErrno = Libc.LastErrno;
            }
            else handleErrno = Libc.LastErrno;
        }
        _mandatoryHandles = mode == InodeFileHandles.Mandatory;
        if (_mandatoryHandles && !_useHandles)
        {
            _mountFd.Dispose();
            _rootFd.Dispose();
            throw new IOException(handleErrno == Errno.EOPNOTSUPP.Value
                ? $"--inode-file-handles=mandatory: the filesystem of the shared directory '{dir}' has no file handles; use --inode-file-handles=prefer or never."
                : $"--inode-file-handles=mandatory: the daemon cannot reopen file handles ({new Errno(handleErrno == 0 ? Errno.EPERM.Value : handleErrno)}; it needs CAP_DAC_READ_SEARCH, as root); use --inode-file-handles=prefer or never.");
        }
        _announceSubmounts = _options.AnnouncesSubmounts();
        _switchCredentials = Libc.geteuid() == 0;

        _root = new Node(FuseConstants.RootId, new InodeKey(st.Dev, st.Ino), Libc.S_IFDIR, _rootFd);
        _root.Lookups = long.MaxValue / 2;
        InstallRoot();
        Log.Opened(_logger, _rootPath, _useHandles, _fdCache.Capacity);
    }

    /// <summary>Nodes the guest currently knows (including the root).</summary>
    public long KnownNodes => _nodes.Count;

    /// <summary>Open files and directories (FUSE handles).</summary>
    public long OpenHandles => _files.Count;

    /// <summary>Bytes returned by READ since start.</summary>
    public long BytesRead => Interlocked.Read(ref _bytesRead);

    /// <summary>Bytes accepted by WRITE since start.</summary>
    public long BytesWritten => Interlocked.Read(ref _bytesWritten);

    /// <summary>O_PATH descriptors currently held in the bounded cache.</summary>
    public int CachedDescriptors => _fdCache.Count;

    /// <summary>Descriptors the fd cache keeps at most (<c>--fd-cache-size</c>, or the automatic size).</summary>
    public int FdCacheCapacity => _fdCache.Capacity;

    /// <summary>Host mounts below the share the daemon holds a descriptor of, to decode their inodes' file handles.</summary>
    public int SubmountDescriptors => _mountFds.Count;

    /// <summary>Whether inodes are identified by file handle (false: every node pins an O_PATH descriptor).</summary>
    public bool UsesFileHandles => _useHandles;

    /// <summary>The INIT flags agreed with the client.</summary>
    public InitFlags Negotiated => _negotiated;

    private void InstallRoot()
    {
        _nodes[_root.Id] = _root;
        lock (_inodes[Stripe(_root.Key)]) _inodes[Stripe(_root.Key)][_root.Key] = _root;
    }

    /// <inheritdoc/>
    public InitFlags Init(InitFlags offered)
    {
        var wanted = InitFlags.AsyncRead | InitFlags.PosixLocks | InitFlags.FlockLocks | InitFlags.AtomicOTrunc
            | InitFlags.BigWrites | InitFlags.ParallelDirOps | InitFlags.MaxPages | InitFlags.ExportSupport
            | InitFlags.CacheSymlinks | InitFlags.AsyncDio;
        // No READDIRPLUS with --no-readdirplus (as virtiofsd). KILLPRIV_V2 unless --no-killpriv-v2: without it the
        // client kernel clears the bits with a SETATTR, and Linux's FUSE client then leaves S_ISGID on a
        // group-executable file its group's member wrote, where a local filesystem clears it.
        if (!_options.NoReaddirplus) wanted |= InitFlags.DoReadDirPlus | InitFlags.ReadDirPlusAuto;
        if (_options.HandlesKillprivV2()) wanted |= InitFlags.HandleKillPrivV2;
        if (_options.AnnouncesSubmounts()) wanted |= InitFlags.Submounts;
        if (_options.AllowMmap) wanted |= InitFlags.DirectIoAllowMmap;
        if (_xattr) wanted |= InitFlags.SetXAttrExt;
        wanted |= XattrInitFlags(offered);
        if (_options.Writeback) wanted |= InitFlags.WritebackCache;
        if (_settings.Cache == CachePolicy.Auto) wanted |= InitFlags.AutoInvalData;
        // Creates then name the caller's supplementary group that owns the parent; only a daemon that acts as the
        // caller can use it.
        if (_switchCredentials) wanted |= InitFlags.CreateSuppGroup;
        _negotiated = wanted & offered;
        Interlocked.Increment(ref _generation);
        return _negotiated;
    }

    /// <inheritdoc/>
    public void Destroy()
    {
        foreach (var file in _files.Values)
        {
            if (!_files.TryRemove(file.Id, out _)) continue;
            ForgetHandle(file);
            file.Fd.Dispose();
        }
        foreach (var node in _nodes.Values)
        {
            if (node == _root) continue;
            lock (_inodes[Stripe(node.Key)])
            {
                node.Dropped = true;
                ReleaseSlot(node);
                _inodes[Stripe(node.Key)].Remove(node.Key);
            }
            _nodes.TryRemove(node.Id, out _);
            node.Pinned?.Dispose();
            node.DropLockFds(_kept);
        }
        foreach (var stripe in _inodes)
        {
            lock (stripe)
            {
                // what is left besides the root is retired nodes, which hold only a cached descriptor
                foreach (var node in stripe.Values)
                {
                    if (node == _root) continue;
                    node.Dropped = true;
                    ReleaseSlot(node);
                }
                stripe.Clear();
            }
        }
        _fdCache.Clear();
        _root.DropLockFds(_kept);
        InstallRoot();
        _negotiated = InitFlags.None;
    }

    /// <summary>Closes every descriptor, the share's included.</summary>
    public void Dispose()
    {
        Destroy();
        foreach (var fd in _mountFds.Values) fd.Dispose();
        _mountFd.Dispose();
        _rootFd.Dispose();
    }

    // ---- helpers -------------------------------------------------------------------------------------------

    private static int Stripe(InodeKey key) => (int)((key.Ino ^ (key.Ino >> 17) ^ key.Dev) & (Stripes - 1));

    private static Errno LastErrno() => new(Libc.LastErrno);

    private bool ReadOnly => _options.Readonly;

    /// <summary>Entry and attribute validity by cache policy: never 0, auto 1 s, metadata/always one day.</summary>
    private ulong Timeout => _settings.Cache switch
    {
        CachePolicy.Never => 0,
        CachePolicy.Auto => 1,
        _ => 86400,
    };

    /// <summary>
    /// Checks a guest name that must be one ordinary path component: empty or containing '/' (or NUL) → EINVAL,
    /// longer than NAME_MAX → ENAMETOOLONG. '.' and '..' pass; each operation decides what they mean.
    /// </summary>
    private static Errno CheckName(ReadOnlySpan<byte> name)
    {
        if (name.IsEmpty) return Errno.EINVAL;
        if (name.Length > MaxName) return Errno.ENAMETOOLONG;
        if (name.IndexOfAny((byte)'/', (byte)0) >= 0) return Errno.EINVAL;
        return Errno.Ok;
    }

    private static bool IsDot(ReadOnlySpan<byte> name) => name.Length == 1 && name[0] == (byte)'.';

    private static bool IsDotDot(ReadOnlySpan<byte> name) => name.Length == 2 && name[0] == (byte)'.' && name[1] == (byte)'.';

    private static bool IsDots(ReadOnlySpan<byte> name) => IsDot(name) || IsDotDot(name);

    /// <summary>Copies a checked name into <paramref name="buffer"/> with a NUL; returns the slice with the NUL.</summary>
    private static ReadOnlySpan<byte> CString(ReadOnlySpan<byte> name, Span<byte> buffer)
    {
        name.CopyTo(buffer);
        buffer[name.Length] = 0;
        return buffer[..(name.Length + 1)];
    }

    /// <summary>The rules of <paramref name="rules"/>, which the option's parser has checked already.</summary>
    private static IdMap Translation(IEnumerable<string> rules, string option) =>
        IdMap.TryCreate(rules, out var map, out var why, out var rule) ? map
        : throw new ArgumentException($"{option} '{rule}' {why}", nameof(rules));

    /// <summary>The host ids the guest's <paramref name="ctx"/> acts as; false when a forbid-guest rule covers one of them.</summary>
    private bool TryHostIds(in FuseContext ctx, out uint uid, out uint gid, out uint suppGid)
    {
        suppGid = ctx.SuppGid;
        gid = 0;
        return _uids.TryToHost(ctx.Uid, out uid) && _gids.TryToHost(ctx.Gid, out gid)
            && (suppGid == FuseContext.NoGroup || _gids.TryToHost(suppGid, out suppGid));
    }

    /// <summary>The caller's host gid for a comparison with a file's group; a forbidden gid matches no group.</summary>
    private uint HostGidOrNone(uint guestGid) => _gids.TryToHost(guestGid, out var gid) ? gid : FuseContext.NoGroup;

    /// <summary>The attributes the guest sees: owners translated from host to guest ids.</summary>
    private void FillAttr(in Stat st, out Attr attr)
    {
        attr = new Attr
        {
            Ino = st.Ino,
            Size = (ulong)st.Size,
            Blocks = (ulong)st.Blocks,
            Atime = (ulong)st.Atime,
            Mtime = (ulong)st.Mtime,
            Ctime = (ulong)st.Ctime,
            Atimensec = (uint)st.AtimeNsec,
            Mtimensec = (uint)st.MtimeNsec,
            Ctimensec = (uint)st.CtimeNsec,
            Mode = st.Mode,
            Nlink = st.Nlink > uint.MaxValue ? uint.MaxValue : (uint)st.Nlink,
            Uid = _uids.ToGuest(st.Uid),
            Gid = _gids.ToGuest(st.Gid),
            Rdev = (uint)st.Rdev,
            Blksize = (uint)st.Blksize,
        };
    }

    private AttrOut MakeAttrOut(in Stat st)
    {
        var o = new AttrOut { AttrValid = Timeout };
        FillAttr(st, out o.Attr);
        return o;
    }

    private EntryOut MakeEntry(Node node, in Stat st)
    {
        var timeout = Timeout;
        var e = new EntryOut
        {
            Nodeid = node.Id,
            Generation = (ulong)Interlocked.Read(ref _generation),
            EntryValid = timeout,
            AttrValid = timeout,
        };
        FillAttr(st, out e.Attr);
        if (node.IsMountRoot && (_negotiated & InitFlags.Submounts) != 0) e.Attr.Flags = FuseConstants.AttrSubmount;
        return e;
    }

    private Node? FindNode(NodeId id) => _nodes.TryGetValue(id.Value, out var node) ? node : null;

    /// <summary>Borrows a descriptor of the node: pinned, cached, or reopened from its handle and cached.</summary>
    private Errno Acquire(Node node, out FdLease lease)
    {
        if (node.Stale)
        {
            lease = default;
            return Errno.ESTALE;
        }
        if (node.Pinned is { } pinned)
        {
            var added = false;
            try
            {
                pinned.DangerousAddRef(ref added);
            }
            catch (ObjectDisposedException)
            {
                lease = default;
                return Errno.ENOENT;
            }
            lease = new FdLease(pinned, owned: false);
            return Errno.Ok;
        }
        if (_fdCache.TryLease(node, out lease)) return Errno.Ok;
        // Not cached: the eviction that took the descriptor gave the node a handle or pinned the descriptor, both
        // before it let the cache lock go, and TryLease took that lock after it.
        var handle = node.Handle;
        if (handle is null)
        {
            if (node.Pinned is not null) return Acquire(node, out lease);
            lease = default;
            return Errno.ENOENT; // dropped before its descriptor was ever cached
        }
        var mountFd = node.MountFd ?? _mountFd;
        var fd = Libc.open_by_handle_at(mountFd, handle, Libc.O_PATH | Libc.O_NOFOLLOW | Libc.O_CLOEXEC);
        if (fd < 0 && MadeRoom()) fd = Libc.open_by_handle_at(mountFd, handle, Libc.O_PATH | Libc.O_NOFOLLOW | Libc.O_CLOEXEC);
        if (fd < 0)
        {
            lease = default;
            return LastErrno();
        }
        lease = _fdCache.InsertAndLease(node, new SafeFd(fd));
        return Errno.Ok;
    }

    /// <summary>
    /// Looks the node up and borrows its descriptor; unknown ids are ENOENT, never another file, and so is a node the
    /// allowlist hides now (it is checked at every use, so a change of the allowlist reaches names looked up before).
    /// </summary>
    private Errno Acquire(NodeId id, out Node? node, out FdLease lease)
    {
        node = FindNode(id);
        if (node is null)
        {
            lease = default;
            return Errno.ENOENT;
        }
        var err = Acquire(node, out lease);
        if (err.IsError || node == _root || _settings.Allowlist is null) return err;
        err = CheckReach(lease.Fd.Value);
        if (err.IsError)
        {
            lease.Dispose();
            lease = default;
        }
        return err;
    }

    /// <summary>
    /// Called right after an open failed. At the descriptor limit (EMFILE/ENFILE) the cache closes its 64 least
    /// recently used descriptors (their nodes reopen by handle when next used) and the caller tries the open once
    /// more: true. Otherwise, or when the cache had none to give, false, with the open's errno left in place for the
    /// caller to report. So the cache never makes a guest's open fail while it holds descriptors itself.
    /// </summary>
    private bool MadeRoom()
    {
        var errno = Libc.LastErrno;
        if (errno != Errno.EMFILE.Value && errno != Errno.ENFILE.Value) return false;
        var closed = _fdCache.Trim(64);
        if (closed > 0) Log.MadeRoom(_logger, errno, closed, _fdCache.Count);
        else Log.OutOfDescriptors(_logger, errno);
        Marshal.SetLastPInvokeError(errno);
        return closed > 0;
    }

    /// <summary><c>openat</c> below <paramref name="dir"/>, tried once more when <see cref="MadeRoom"/> says so.</summary>
    private int OpenAt(SafeFd dir, ReadOnlySpan<byte> path, int flags, uint mode = 0)
    {
        var fd = Libc.openat(dir, path, flags, mode);
        return fd < 0 && MadeRoom() ? Libc.openat(dir, path, flags, mode) : fd;
    }

    /// <summary>Opens the inode behind <paramref name="fd"/> anew through its /proc/self/fd link, retried as <see cref="OpenAt"/>.</summary>
    private int Reopen(int fd, int flags)
    {
        Span<byte> buffer = stackalloc byte[ProcPath.Size];
        var proc = ProcPath.Format(fd, buffer);
        var reopened = Libc.openat(Libc.AT_FDCWD, proc, flags, 0);
        return reopened < 0 && MadeRoom() ? Libc.openat(Libc.AT_FDCWD, proc, flags, 0) : reopened;
    }

    private Errno GetFile(NodeId node, ulong fh, bool dir, out OpenFile? file)
    {
        if (!_files.TryGetValue(fh, out file) || file.IsDir != dir || file.Node.Id != node.Value)
        {
            file = null;
            return Errno.EBADF;
        }
        return Errno.Ok;
    }

    private OpenFile Register(Node node, SafeFd fd, bool isDir, int accessMode, int hostFlags)
    {
        var file = new OpenFile(NewHandleId(), node, fd, isDir, accessMode);
        RecordHandle(file, hostFlags);
        Interlocked.Increment(ref node.OpenCount);
        _files[file.Id] = file;
        return file;
    }

    private static string? ReadProcLink(int fd)
    {
        Span<byte> proc = stackalloc byte[ProcPath.Size];
        Span<byte> target = stackalloc byte[PathMax];
        var n = Libc.readlinkat(Libc.AT_FDCWD, ProcPath.Format(fd, proc), target, (nuint)target.Length);
        if (n <= 0 || n >= target.Length) return null;
        return Encoding.UTF8.GetString(target[..(int)n]);
    }

    /// <summary>
    /// The kernel's rule for a write or truncation by a caller without CAP_FSETID (it sends the KILL_SUIDGID flags for
    /// every such caller and leaves the decision to the server): set-user-ID always goes; set-group-ID goes when the
    /// file is group-executable or the caller is not in the file's group (setattr_should_drop_sgid, as a plain
    /// directory on the host does it). Only the caller's primary group is known, so a member through a
    /// supplementary group loses the bit too.
    /// </summary>
    private static void KillSuidGid(SafeFd fd, uint callerGid)
    {
        if (Libc.fstat(fd, out var st) != 0 || (st.Mode & Libc.S_IFMT) != Libc.S_IFREG) return;
        var mode = st.Mode & 0xFFF;
        var cleared = mode & ~Libc.S_ISUID;
        if ((mode & Libc.S_IXGRP) != 0 || st.Gid != callerGid) cleared &= ~Libc.S_ISGID;
        if (cleared != mode)
        {
            Span<byte> proc = stackalloc byte[ProcPath.Size];
            Libc.fchmodat(Libc.AT_FDCWD, ProcPath.Format(fd.Value, proc), cleared, 0);
        }
    }
}
