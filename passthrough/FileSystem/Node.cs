using Hypervisor.Interop;

namespace Hypervisor.Passthrough.FileSystem;

/// <summary>The identity of a host inode: hard links share it, so they share one node.</summary>
internal readonly record struct InodeKey(ulong Dev, ulong Ino);

/// <summary>
/// One inode the guest knows. It holds no descriptor of its own when the host filesystem has file handles: the
/// handle reopens it on demand and the <see cref="FdCache"/> keeps a bounded number of those descriptors. Only
/// where handles are unavailable does the node pin an O_PATH descriptor for its lifetime.
/// </summary>
internal sealed class Node(ulong id, InodeKey key, uint type, SafeFd? pinned)
{
    /// <summary>The FUSE node id (our own counter, never the host inode number, never reused).</summary>
    public readonly ulong Id = id;

    public readonly InodeKey Key = key;

    /// <summary>The S_IFMT bits; an inode never changes type.</summary>
    public readonly uint Type = type;

    /// <summary>
    /// A <c>struct file_handle</c> (header and bytes) for open_by_handle_at; null until the cache first evicts the
    /// node's descriptor, which sets it (under the cache lock) before the descriptor goes. Set once.
    /// </summary>
    public volatile byte[]? Handle;

    /// <summary>
    /// The O_PATH descriptor held for the node's lifetime: from the start when the filesystem has no usable handles
    /// (or the node is the share root), or set by the cache (under its lock) when it evicts a descriptor whose
    /// handle cannot be made. Set once.
    /// </summary>
    public volatile SafeFd? Pinned = pinned;

    /// <summary>
    /// The descriptor that <see cref="Handle"/> decodes against when the inode lies on a mount below the share's
    /// (a handle only decodes against its own filesystem); null for the share's own mount. Set with the handle.
    /// </summary>
    public volatile SafeFd? MountFd;

    /// <summary>The inode is the root of a host mount below the share (FUSE_ATTR_SUBMOUNT is announced for it).</summary>
    public bool IsMountRoot;

    /// <summary>
    /// Lookups the client holds; guarded by the node table stripe lock. A node at zero that is not
    /// <see cref="Dropped"/> is retired: the client forgot it, but it stays in the inode table while the fd cache
    /// holds its descriptor, so that a new LOOKUP of the inode needs no open (see <see cref="FdCache"/>).
    /// </summary>
    public long Lookups;

    /// <summary>
    /// The node's record in the share's state store, or -1 (no store, or the store is full); guarded by the stripe
    /// lock, like <see cref="Lookups"/>, whose every change the record follows.
    /// </summary>
    public int StoreSlot = -1;

    /// <summary>
    /// The node's store record names it by parent node and name instead of a file handle (its inode has none on the
    /// share's mount): LOOKUP, CREATE and RENAME keep that name current. Set once, before the node is published.
    /// </summary>
    public bool ByName;

    /// <summary>
    /// Restored from the state store without a way to reopen its inode (no file handle on the share's mount): every
    /// use answers ESTALE, never another file.
    /// </summary>
    public bool Stale;

    /// <summary>Set once when the lookup count reaches zero (or the session ends); guarded by the stripe lock.</summary>
    public volatile bool Dropped;

    // Fd cache state, guarded by the FdCache lock.
    public SafeFd? CachedFd;
    public long CachedTicket;
    public Node? Prev;
    public Node? Next;

    /// <summary>Open files of this node (for dropping per-owner lock descriptors on the last release).</summary>
    public int OpenCount;

    /// <summary>Per lock-owner descriptors carrying that owner's POSIX locks (OFD locks); guarded by lock(this).</summary>
    public Dictionary<ulong, SafeFd>? LockFds;

    /// <summary>
    /// The guest pid that last took a lock for each lock owner, so GETLK can name the holder as a local fcntl does
    /// (OFD locks have no owning process on the host); guarded by lock(this).
    /// </summary>
    public Dictionary<ulong, uint>? LockPids;

    public bool IsDir => Type == Libc.S_IFDIR;
    public bool IsRegular => Type == Libc.S_IFREG;
    public bool IsSymlink => Type == Libc.S_IFLNK;

    /// <summary>Closes every per-owner lock descriptor (releasing their locks), and has <paramref name="kept"/> drop them too.</summary>
    public void DropLockFds(KeptDescriptors? kept)
    {
        lock (this)
        {
            if (LockFds is null) return;
            foreach (var (owner, fd) in LockFds)
            {
                if (kept is not null)
                {
                    kept.Drop(new Hypervisor.Protocol.Recovery.KeptEntry(Hypervisor.Protocol.Recovery.KeptKind.LockOwner, Id, owner));
                    KeptDescriptors.Unlock(fd);
                }
                fd.Dispose();
            }
            LockFds = null;
            LockPids = null;
        }
    }
}

/// <summary>
/// A descriptor borrowed for the length of one operation. The SafeHandle reference taken at borrow time keeps the
/// descriptor number valid even if the cache evicts it meanwhile (the close then happens at <see cref="Dispose"/>).
/// </summary>
internal readonly struct FdLease(SafeFd fd, bool owned) : IDisposable
{
    private readonly bool _owned = owned;

    public SafeFd Fd { get; } = fd;

    public void Dispose()
    {
        if (Fd is null) return;
        if (_owned) Fd.Dispose();
        else Fd.DangerousRelease();
    }
}

/// <summary>
/// A bounded LRU of O_PATH descriptors of handle-identified nodes, live or retired. One lock, O(1) per operation
/// (an intrusive list through the nodes); opening happens outside it. Inside it happen the closes of evicted
/// descriptors (cheap) and the owner's eviction callback, which may take a node table stripe lock: the lock order is
/// cache, then stripe, so no one may enter the cache while holding a stripe lock.
/// <para>Every insertion draws a ticket. A descriptor cached under a ticket no later than one read before a
/// <c>fstatat</c> has held its inode since before that call, so an inode number the call saw belongs to that
/// node's inode (a held inode's number cannot be reused).</para>
/// </summary>
internal sealed class FdCache
{
    private readonly object _lock = new();
    private readonly int _capacity;
    private readonly Func<Node, SafeFd, bool> _evicting;
    private Node? _head;
    private Node? _tail;
    private int _count;
    private long _tickets;

    /// <param name="capacity">Descriptors kept at most.</param>
    /// <param name="evicting">Called under the cache lock when a node's descriptor leaves by eviction (not by
    /// <see cref="Remove"/>); returns false when the node keeps the descriptor as its pinned one, true to close it.</param>
    public FdCache(int capacity, Func<Node, SafeFd, bool> evicting)
    {
        _capacity = Math.Max(1, capacity);
        _evicting = evicting;
    }

    /// <summary>The ticket of the latest insertion (read it before the <c>fstatat</c> whose result is to be matched).</summary>
    public long Ticket => Volatile.Read(ref _tickets);

    /// <summary>
    /// Runs <paramref name="countLookup"/> under the cache lock if the node's descriptor is cached under a ticket no
    /// later than <paramref name="ticket"/>, and marks it recently used; false when it is not (or the callback says no).
    /// </summary>
    public bool TryCountLookup(Node node, long ticket, Func<Node, bool> countLookup)
    {
        lock (_lock)
        {
            if (node.CachedFd is null || node.CachedTicket > ticket || !countLookup(node)) return false;
            MoveToFront(node);
            return true;
        }
    }

    public int Count => Volatile.Read(ref _count);

    public int Capacity => _capacity;

    /// <summary>Whether the node's descriptor is cached right now.</summary>
    public bool IsCached(Node node)
    {
        lock (_lock) return node.CachedFd is not null;
    }

    /// <summary>Borrows the cached descriptor of <paramref name="node"/>, if any, and marks it recently used.</summary>
    public bool TryLease(Node node, out FdLease lease)
    {
        lock (_lock)
        {
            var fd = node.CachedFd;
            if (fd is not null)
            {
                MoveToFront(node);
                var added = false;
                fd.DangerousAddRef(ref added);
                lease = new FdLease(fd, owned: false);
                return true;
            }
        }
        lease = default;
        return false;
    }

    /// <summary>
    /// Caches <paramref name="fd"/> (ownership passes to the cache) and returns a lease on the node's descriptor.
    /// If the node was dropped meanwhile the descriptor is not cached and the lease owns it.
    /// </summary>
    public FdLease InsertAndLease(Node node, SafeFd fd)
    {
        SafeFd? surplus = null;
        FdLease lease;
        lock (_lock)
        {
            if (node.Dropped) return new FdLease(fd, owned: true);
            if (node.CachedFd is { } existing)
            {
                surplus = fd;
                fd = existing;
                MoveToFront(node);
            }
            else
            {
                Insert(node, fd);
            }
            var added = false;
            fd.DangerousAddRef(ref added);
            lease = new FdLease(fd, owned: false);
        }
        surplus?.Dispose();
        return lease;
    }

    /// <summary>Caches <paramref name="fd"/> for <paramref name="node"/> unless it already has one (then it is closed).</summary>
    public void Adopt(Node node, SafeFd fd)
    {
        lock (_lock)
        {
            if (!node.Dropped && node.CachedFd is null)
            {
                Insert(node, fd);
                return;
            }
        }
        fd.Dispose();
    }

    /// <summary>Like <see cref="Adopt"/> for a raw descriptor, wrapped only when it is kept (no allocation on a hit).</summary>
    public void AdoptRaw(Node node, int fd)
    {
        lock (_lock)
        {
            if (!node.Dropped && node.CachedFd is null)
            {
                Insert(node, new SafeFd(fd));
                return;
            }
            MoveToFront(node);
        }
        Libc.close(fd);
    }

    /// <summary>Drops the node's descriptor (the node was forgotten).</summary>
    public void Remove(Node node)
    {
        lock (_lock)
        {
            if (node.CachedFd is not { } fd) return;
            Unlink(node);
            node.CachedFd = null;
            _count--;
            fd.Dispose();
        }
    }

    /// <summary>Closes up to <paramref name="count"/> least recently used descriptors (after EMFILE/ENFILE); returns how many it took out.</summary>
    public int Trim(int count)
    {
        var evicted = 0;
        lock (_lock)
        {
            for (; evicted < count && _tail is { } victim; evicted++) EvictOne(victim);
        }
        return evicted;
    }

    public void Clear() => Trim(int.MaxValue);

    private void Insert(Node node, SafeFd fd)
    {
        node.CachedFd = fd;
        node.CachedTicket = Volatile.Read(ref _tickets) + 1;
        Volatile.Write(ref _tickets, node.CachedTicket);
        LinkFront(node);
        _count++;
        EvictOverflow();
    }

    private void EvictOverflow()
    {
        while (_count > _capacity && _tail is { } victim) EvictOne(victim);
    }

    private void EvictOne(Node victim)
    {
        Unlink(victim);
        var fd = victim.CachedFd!;
        victim.CachedFd = null;
        _count--;
        if (_evicting(victim, fd)) fd.Dispose();
    }

    private void LinkFront(Node node)
    {
        node.Prev = null;
        node.Next = _head;
        if (_head is not null) _head.Prev = node;
        _head = node;
        _tail ??= node;
    }

    private void Unlink(Node node)
    {
        if (node.Prev is not null) node.Prev.Next = node.Next;
        else _head = node.Next;
        if (node.Next is not null) node.Next.Prev = node.Prev;
        else _tail = node.Prev;
        node.Prev = node.Next = null;
    }

    private void MoveToFront(Node node)
    {
        if (_head == node) return;
        Unlink(node);
        LinkFront(node);
    }
}

/// <summary>An open file or directory (a FUSE <c>fh</c>).</summary>
internal sealed class OpenFile(ulong id, Node node, SafeFd fd, bool isDir, int accessMode)
{
    public readonly ulong Id = id;
    public readonly Node Node = node;
    public readonly SafeFd Fd = fd;
    public readonly bool IsDir = isDir;

    /// <summary>O_RDONLY / O_WRONLY / O_RDWR as the guest opened it (lock types are checked against it).</summary>
    public readonly int AccessMode = accessMode;

    /// <summary>The handle's record in the share's state store, or -1; taken back by whoever removes the handle.</summary>
    public int StoreSlot = -1;

    // Directory stream state, guarded by lock(this): a getdents64 buffer and the d_off cookie of the next entry.
    public byte[]? Buffer;
    public int BufferPos;
    public int BufferLen;
    public ulong NextOffset;
    public bool Positioned;
}
