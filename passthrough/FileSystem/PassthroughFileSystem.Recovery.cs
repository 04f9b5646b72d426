using Hypervisor.Interop;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Protocol.Fuse;
using Hypervisor.Protocol.Recovery;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough.FileSystem;

/// <summary>
/// The share's state store (passthrough/FileSystem/README.md, "Surviving a crash"): every node id and file handle the
/// guest holds has a record there, written before the reply that makes it known, so that a daemon started after a
/// crash serves the same ids. Record writes are plain memory writes under the locks that already guard the state
/// they mirror; the only syscall they add is one name_to_handle_at per new node. A node without a handle is recorded by
/// its parent node and name instead, rewritten when that changes (a LOOKUP under another name, a RENAME; one
/// <c>fstatat</c> per RENAME in a directory whose nodes are recorded so), and reopened at takeover by opening that name
/// below its reopened parent.
/// </summary>
public sealed partial class PassthroughFileSystem
{
    private StateStore? _store;
    private KeptDescriptors? _kept;
    private StoreSlots? _nodeSlots;
    private StoreSlots? _handleSlots;
    private int _storeFullLogged;
    // LOOKUPs the previous daemon counted but whose reply may never have reached the guest (unique → node id); null
    // when there are none left. Emptied as the vdev sends them again.
    private System.Collections.Concurrent.ConcurrentDictionary<ulong, ulong>? _replayed;
    // The largest unique among them: the guest numbers requests in increasing order, so anything it sent after the
    // crash is above it and never looked up.
    private ulong _replayedMax;
    private static int s_journalSlots;
    [ThreadStatic] private static int t_journalSlot;

    /// <summary>The entry generation of the current session (the store carries it to the next daemon).</summary>
    public ulong Generation => (ulong)Interlocked.Read(ref _generation);

    /// <summary>What a daemon found in the store at start.</summary>
    /// <param name="Nodes">Node ids restored (reopened on demand by file handle).</param>
    /// <param name="Stale">Restored nodes that cannot be reopened: they answer ESTALE.</param>
    /// <param name="Handles">Open files and directories reopened.</param>
    /// <param name="LostHandles">Handles whose file could not be reopened: they answer EBADF.</param>
    /// <param name="AdoptedHandles">Of <paramref name="Handles"/>, those whose descriptor the vdev kept (the rest were reopened by file handle).</param>
    /// <param name="AdoptedLockOwners">Lock owners' descriptors the vdev kept, carrying their locks on.</param>
    public readonly record struct Restored(int Nodes, int Stale, int Handles, int LostHandles, int AdoptedHandles = 0, int AdoptedLockOwners = 0);

    /// <summary>
    /// Keeps the node and handle records in <paramref name="store"/> from now on. When the store holds a live session
    /// (a daemon of this share served the guest before), the session is taken over first: the INIT flags and
    /// generation, every node the guest holds, every open handle. Call once, before serving.
    /// </summary>
    public Restored? AttachStore(StateStore store, out uint minor, out InitFlags flags) => AttachStore(store, null, null, out minor, out flags);

    /// <summary>
    /// As <see cref="AttachStore(StateStore, out uint, out InitFlags)"/>, with the vdev's descriptor store:
    /// <paramref name="adopted"/> are the descriptors it kept from the previous daemons (taken over here: an open handle
    /// whose descriptor was kept uses it instead of being reopened, a lock owner's descriptor carries its locks on), and
    /// <paramref name="kept"/> is where the descriptors this daemon opens are handed to it from now on.
    /// </summary>
    internal Restored? AttachStore(StateStore store, KeptDescriptors? kept, Dictionary<KeptEntry, SafeFd>? adopted, out uint minor, out InitFlags flags)
    {
        ArgumentNullException.ThrowIfNull(store);
        _store = store;
        _kept = kept;
        Restored? restored = null;
        if (store.TryReadInit(out minor, out var rawFlags, out var generation))
        {
            flags = (InitFlags)rawFlags;
            _negotiated = flags;
            Interlocked.Exchange(ref _generation, (long)generation);
            restored = RestoreNodes(store);
            var journal = store.TakeJournal();
            if (journal.Count > 0)
            {
                _replayedMax = journal.Keys.Max();
                _replayed = new(journal);
            }
            var (handles, lost, fromVdev) = RestoreHandles(store, adopted);
            int locks = adopted is null ? 0 : AdoptLockOwners(adopted);
            restored = restored.Value with { Handles = handles, LostHandles = lost, AdoptedHandles = fromVdev, AdoptedLockOwners = locks };
        }
        else
        {
            flags = InitFlags.None;
            minor = 0;
        }
        // What is left was not the guest's any more (a RELEASE or FLUSH whose Drop the vdev never got): closed here and there.
        if (adopted is not null)
        {
            foreach (var (entry, fd) in adopted)
            {
                fd.Dispose();
                kept?.Drop(entry);
            }
            adopted.Clear();
        }
        if (Volatile.Read(ref store.NextNodeId) < (long)FuseConstants.RootId) Volatile.Write(ref store.NextNodeId, (long)FuseConstants.RootId);
        _nodeSlots = new StoreSlots(store.NodeCapacity, store.NodeHighWater, slot => store.TryReadNode(slot, out _), store.CoverNode);
        _handleSlots = new StoreSlots(store.HandleCapacity, store.HandleHighWater, slot => store.TryReadHandle(slot, out _), store.CoverHandle);
        return restored;
    }

    /// <summary>
    /// Stops writing to the store, leaving its records as they are: the daemon is stopping without the guest's session
    /// ending (the next daemon takes it over).
    /// </summary>
    public void DetachStore()
    {
        _store = null;
        // What was noted and not yet sent cannot reach the vdev through a daemon that stops; the next daemon reopens it.
        _kept = null;
    }

    /// <summary>Hands the vdev the descriptors noted since the last call (a queue ran dry): see <see cref="KeptDescriptors.Flush"/>.</summary>
    public void FlushKept() => _kept?.Flush();

    /// <summary>Descriptors noted for the vdev and not yet sent (diagnostics, tests).</summary>
    public int PendingKept => _kept?.Pending ?? 0;

    /// <summary>A lock owner's descriptor was opened: the vdev keeps it, and with it the owner's locks, across a crash.</summary>
    private void KeepLockOwner(Node node, ulong owner, SafeFd fd)
    {
        if (_store is not null) _kept?.Keep(new KeptEntry(KeptKind.LockOwner, node.Id, owner), fd);
    }

    /// <summary>A lock owner's descriptor was closed (its locks released).</summary>
    private void DropLockOwner(Node node, ulong owner) => _kept?.Drop(new KeptEntry(KeptKind.LockOwner, node.Id, owner));

    private Restored RestoreNodes(StateStore store)
    {
        int nodes = 0, stale = 0;
        int high = store.NodeHighWater;
        Dictionary<ulong, (Node Node, NodeRecord Record)>? named = null;
        for (int slot = 0; slot < high; slot++)
        {
            if (!store.TryReadNode(slot, out var record)) continue;
            if (record!.Lookups <= 0 || record.Id == FuseConstants.RootId)
            {
                store.FreeNode(slot);
                continue;
            }
            var key = new InodeKey(record.Dev, record.Ino);
            // Only a handle of the share's own mount decodes against the descriptor this daemon holds; anything else
            // (no handles on the filesystem, another mount) cannot be proven to be the same inode any more.
            var node = new Node(record.Id, key, record.Type, null)
            {
                Handle = _useHandles && record.Handle.Length > 0 ? record.Handle : null,
                Lookups = record.Lookups,
                StoreSlot = slot,
            };
            node.Stale = node.Handle is null;
            // Stale until its name is reopened below (a cycle of parents meets it stale and fails).
            node.ByName = record.Handle.Length == 0;
            if (node.ByName) (named ??= [])[node.Id] = (node, record);
            nodes++;
            _nodes[node.Id] = node;
            // A stale node never enters the inode table: a new LOOKUP of that inode number gets a node of its own.
            if (!node.Stale)
            {
                var stripe = _inodes[Stripe(key)];
                lock (stripe) stripe.TryAdd(key, node);
            }
        }
        if (named is not null)
        {
            foreach (var (node, record) in named.Values.ToArray())
                if (named.ContainsKey(node.Id)) ReopenByName(store, node, record, named, 0);
        }
        foreach (var node in _nodes.Values) if (node.Stale) stale++;
        return new Restored(nodes, stale, 0, 0);
    }

    /// <summary>
    /// Reopens a node recorded by name: its parent first (recursively; the share root is the base, a parent with a
    /// handle reopens by it), then the name below it with <c>O_PATH|O_NOFOLLOW</c>, accepted only when dev, ino and
    /// type are the record's. The current name is tried, then the other slot (a rename the old daemon staged but may
    /// not have finished). The node pins what it found (as every node without a handle does) and enters the inode
    /// table; otherwise it stays stale, and so do the nodes below it. <paramref name="pending"/> holds the named nodes
    /// not tried yet; a node leaves it before its parents are tried, so a cycle of parents ends in a stale node.
    /// </summary>
    private SafeFd? ReopenByName(StateStore store, Node node, NodeRecord record, Dictionary<ulong, (Node Node, NodeRecord Record)> pending, int depth)
    {
        pending.Remove(node.Id);
        // The deepest a guest path can reach (PATH_MAX of two-byte components); deeper chains are not followed.
        if (depth >= PathMax / 2) return null;
        var found = ReopenByName(store, node, record.Name, pending, depth);
        if (found is null && record.Previous is { } previous && (found = ReopenByName(store, node, previous, pending, depth)) is not null)
            store.SetName(node.StoreSlot, previous.Parent, previous.Bytes);
        if (found is null) return null;
        node.Pinned = found;
        node.Stale = false;
        var stripe = _inodes[Stripe(node.Key)];
        lock (stripe) stripe.TryAdd(node.Key, node);
        return found;
    }

    private SafeFd? ReopenByName(StateStore store, Node node, NodeName? name, Dictionary<ulong, (Node Node, NodeRecord Record)> pending, int depth)
    {
        if (name is null) return null;
        if (name.Parent == FuseConstants.RootId) return OpenRecorded(_rootFd, node, name.Bytes);
        if (pending.TryGetValue(name.Parent, out var parent))
            return ReopenByName(store, parent.Node, parent.Record, pending, depth + 1) is { } dir ? OpenRecorded(dir, node, name.Bytes) : null;
        // A parent restored by its handle, or a named one tried already (stale when it failed or is still being tried).
        if (FindNode(new NodeId(name.Parent)) is not { Stale: false, IsDir: true } known || Acquire(known, out var lease).IsError) return null;
        using (lease) return OpenRecorded(lease.Fd, node, name.Bytes);
    }

    /// <summary>Opens <paramref name="name"/> (checked by <see cref="StateStore.IsValidName"/>) below <paramref name="dir"/>, if it is still the node's inode.</summary>
    private static SafeFd? OpenRecorded(SafeFd dir, Node node, byte[] name)
    {
        Span<byte> buffer = stackalloc byte[MaxName + 1];
        int fd = Libc.openat(dir, CString(name, buffer), Libc.O_PATH | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0);
        if (fd < 0) return null;
        if (Libc.fstat(fd, out var st) != 0 || st.Dev != node.Key.Dev || st.Ino != node.Key.Ino || (st.Mode & Libc.S_IFMT) != node.Type)
        {
            Libc.close(fd);
            return null;
        }
        return new SafeFd(fd);
    }

    private (int Handles, int Lost, int Adopted) RestoreHandles(StateStore store, Dictionary<KeptEntry, SafeFd>? adopted)
    {
        int handles = 0, lost = 0, fromVdev = 0;
        int high = store.HandleHighWater;
        for (int slot = 0; slot < high; slot++)
        {
            if (!store.TryReadHandle(slot, out var record)) continue;
            var node = FindNode(new NodeId(record.Node));
            var entry = new KeptEntry(KeptKind.Handle, record.Fh, 0);
            SafeFd? file = null;
            if (node is not null && adopted is not null && adopted.Remove(entry, out var kept))
            {
                // The very open file the guest had: its offset, its flock locks, and an inode that may have no name left.
                file = kept;
                fromVdev++;
                PinFromOpenFile(node, kept);
            }
            else if (node is not null && Acquire(node, out var lease) == Errno.Ok)
            {
                using (lease)
                {
                    int fd = record.IsDir
                        ? Libc.openat(lease.Fd, ".\0"u8, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0)
                        : Reopen(lease.Fd.Value, (record.Flags & ~(Libc.O_CREAT | Libc.O_EXCL | Libc.O_TRUNC)) | Libc.O_CLOEXEC);
                    if (fd >= 0) file = new SafeFd(fd);
                }
                // A new open file: the vdev keeps it from now on (it kept none, or its Keep was lost in the crash).
                if (file is not null) _kept?.Keep(entry, file);
            }
            if (file is null || node is null)
            {
                // The guest's next use of the handle answers EBADF; its RELEASE too, which the kernel ignores.
                store.FreeHandle(slot);
                lost++;
                continue;
            }
            var open = new OpenFile(record.Fh, node, file, record.IsDir, record.Flags & Libc.O_ACCMODE) { StoreSlot = slot };
            Interlocked.Increment(ref node.OpenCount);
            _files[open.Id] = open;
            handles++;
        }
        return (handles, lost, fromVdev);
    }

    /// <summary>
    /// A restored node that cannot be reopened by its file handle (its inode has no name left, or the node came back
    /// stale) but is open through <paramref name="file"/>, the descriptor the vdev kept: the node pins an O_PATH
    /// descriptor of that very inode, so that requests on the node id (GETATTR without a handle, SETATTR, a second
    /// OPEN) reach it for as long as the guest knows it.
    /// </summary>
    private void PinFromOpenFile(Node node, SafeFd file)
    {
        if (node.Pinned is not null || Libc.fstat(file, out var st) != 0) return;
        if (st.Dev != node.Key.Dev || st.Ino != node.Key.Ino) return;
        if (st.Nlink != 0 && !node.Stale) return;
        int fd = Reopen(file.Value, Libc.O_PATH | Libc.O_CLOEXEC);
        if (fd < 0) return;
        node.Pinned = new SafeFd(fd);
        if (node.Stale)
        {
            node.Stale = false;
            var stripe = _inodes[Stripe(node.Key)];
            lock (stripe) stripe.TryAdd(node.Key, node);
        }
    }

    /// <summary>
    /// Gives each lock owner's kept descriptor back to its node, where that node is open: its OFD locks were never
    /// released, so the owner's next GETLK, SETLK or unlock acts on them. Returns how many were taken.
    /// </summary>
    private int AdoptLockOwners(Dictionary<KeptEntry, SafeFd> adopted)
    {
        int taken = 0;
        List<KeptEntry>? used = null;
        foreach (var (entry, fd) in adopted)
        {
            if (entry.Kind != KeptKind.LockOwner || FindNode(new NodeId(entry.Id)) is not { } node || Volatile.Read(ref node.OpenCount) == 0) continue;
            lock (node)
            {
                var locks = node.LockFds ??= [];
                if (!locks.TryAdd(entry.Owner, fd)) continue;
            }
            (used ??= []).Add(entry);
            taken++;
        }
        foreach (var entry in used ?? []) adopted.Remove(entry);
        return taken;
    }

    /// <summary>
    /// After a LOOKUP counted its lookup (and before its reply): journals it, and when it is one the previous daemon
    /// counted already (the vdev sent it again after a crash) and it found the same node, takes that count back.
    /// </summary>
    private void JournalLookup(in FuseContext ctx, ulong node)
    {
        if (_store is not { } store) return;
        if (ctx.Unique.Value <= _replayedMax && _replayed is { } replayed && replayed.TryRemove(ctx.Unique.Value, out var counted))
        {
            if (replayed.IsEmpty) _replayed = null;
            if (counted == node)
            {
                Forget(new NodeId(node), 1);
                return;
            }
        }
        int slot = t_journalSlot;
        if (slot == 0) t_journalSlot = slot = Interlocked.Increment(ref s_journalSlots);
        store.Journal(slot, ctx.Unique.Value, node);
    }

    private ulong NewNodeId() => _store is { } store
        ? (ulong)Interlocked.Increment(ref store.NextNodeId)
        : (ulong)Interlocked.Increment(ref _nextNodeId);

    private ulong NewHandleId() => _store is { } store
        ? (ulong)Interlocked.Increment(ref store.NextHandle)
        : (ulong)Interlocked.Increment(ref _nextFh);

    /// <summary>
    /// Writes a new node's record (its stripe lock is held and it is not yet published): its file handle, or where it
    /// has none on the share's mount, <paramref name="parent"/> and <paramref name="name"/>.
    /// </summary>
    private void RecordNode(Node node, ulong parent, ReadOnlySpan<byte> name)
    {
        if (_store is not { } store) return;
        int slot = _nodeSlots!.Take();
        if (slot < 0)
        {
            if (Interlocked.Exchange(ref _storeFullLogged, 1) == 0) Log.StateStoreFull(_logger, store.NodeCapacity);
            return;
        }
        node.StoreSlot = slot;
        if (node.MountFd is null && node.Handle is { } handle)
        {
            store.WriteNode(slot, node.Id, node.Lookups, node.Key.Dev, node.Key.Ino, node.Type, handle);
            return;
        }
        node.ByName = true;
        store.WriteNode(slot, node.Id, node.Lookups, node.Key.Dev, node.Key.Ino, node.Type, parent, name);
    }

    /// <summary>
    /// A node recorded by name was found as <paramref name="name"/> in <paramref name="parent"/> (its stripe lock is
    /// held): the record names it so from now on. Nothing is written when that is its name already, and "." or ".."
    /// are never recorded.
    /// </summary>
    private void StoreName(Node node, ulong parent, ReadOnlySpan<byte> name)
    {
        if (node.StoreSlot >= 0 && !node.Dropped && _store is { } store) store.SetName(node.StoreSlot, parent, name);
    }

    /// <summary><see cref="StoreName"/> for a caller that does not hold the node's stripe lock.</summary>
    private void NameAgain(Node node, ulong parent, ReadOnlySpan<byte> name)
    {
        lock (_inodes[Stripe(node.Key)]) StoreName(node, parent, name);
    }

    /// <summary>
    /// Before a RENAME in a directory whose nodes are recorded by name: the node of <paramref name="cname"/> (a
    /// NUL-terminated name in <paramref name="dir"/>), if it is one recorded by name, gets its new name staged in its
    /// record's other slot, so that a crash between the rename and <see cref="StoreName"/> still leaves a name that
    /// reopens it. Returns that node, or null.
    /// </summary>
    private Node? StageRename(SafeFd dir, ReadOnlySpan<byte> cname, ulong newParent, ReadOnlySpan<byte> newName)
    {
        if (_store is not { } store || Libc.fstatat(dir, cname, out var st, Libc.AT_SYMLINK_NOFOLLOW) != 0) return null;
        var key = new InodeKey(st.Dev, st.Ino);
        var stripe = _inodes[Stripe(key)];
        lock (stripe)
        {
            if (!stripe.TryGetValue(key, out var node) || !node.ByName || node.Dropped || node.StoreSlot < 0) return null;
            store.StageName(node.StoreSlot, newParent, newName);
            return node;
        }
    }

    /// <summary>The node's lookup count changed (its stripe lock is held): one memory write.</summary>
    private void StoreLookups(Node node)
    {
        if (node.StoreSlot >= 0 && _store is { } store) store.SetLookups(node.StoreSlot, node.Lookups);
    }

    /// <summary>The node left the table (its stripe lock is held): its record goes.</summary>
    private void ReleaseSlot(Node node)
    {
        var slot = node.StoreSlot;
        if (slot < 0) return;
        node.StoreSlot = -1;
        if (_store is not { } store) return;
        store.FreeNode(slot);
        _nodeSlots!.Give(slot);
    }

    private void RecordHandle(OpenFile file, int hostFlags)
    {
        if (_store is not { } store) return;
        int slot = _handleSlots!.Take();
        if (slot < 0) return;
        file.StoreSlot = slot;
        store.WriteHandle(slot, file.Id, file.Node.Id, hostFlags & ~Libc.O_TRUNC, file.IsDir);
        // Only a handle the store names is kept by the vdev: a new daemon adopts descriptors by these records. Delayed,
        // so that a handle released soon after (create, write, close) never travels.
        _kept?.Keep(new KeptEntry(KeptKind.Handle, file.Id, 0), file.Fd, delayed: true);
    }

    /// <summary>The handle was released (taken out of the table by this thread): its record goes.</summary>
    private void ForgetHandle(OpenFile file)
    {
        var slot = file.StoreSlot;
        if (slot < 0) return;
        file.StoreSlot = -1;
        if (_store is not { } store) return;
        store.FreeHandle(slot);
        _handleSlots!.Give(slot);
        _kept?.Drop(new KeptEntry(KeptKind.Handle, file.Id, 0));
    }
}
