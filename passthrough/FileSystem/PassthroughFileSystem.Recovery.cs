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
/// they mirror; the only syscall they add is one name_to_handle_at per new node.
/// </summary>
public sealed partial class PassthroughFileSystem
{
    private StateStore? _store;
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
    public readonly record struct Restored(int Nodes, int Stale, int Handles, int LostHandles);

    /// <summary>
    /// Keeps the node and handle records in <paramref name="store"/> from now on. When the store holds a live session
    /// (a daemon of this share served the guest before), the session is taken over first: the INIT flags and
    /// generation, every node the guest holds, every open handle. Call once, before serving.
    /// </summary>
    public Restored? AttachStore(StateStore store, out uint minor, out InitFlags flags)
    {
        ArgumentNullException.ThrowIfNull(store);
        _store = store;
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
            var (handles, lost) = RestoreHandles(store);
            restored = restored.Value with { Handles = handles, LostHandles = lost };
        }
        else
        {
            flags = InitFlags.None;
            minor = 0;
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
    public void DetachStore() => _store = null;

    private Restored RestoreNodes(StateStore store)
    {
        int nodes = 0, stale = 0;
        int high = store.NodeHighWater;
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
            if (node.Stale) stale++;
            nodes++;
            _nodes[node.Id] = node;
            // A stale node never enters the inode table: a new LOOKUP of that inode number gets a node of its own.
            if (!node.Stale)
            {
                var stripe = _inodes[Stripe(key)];
                lock (stripe) stripe.TryAdd(key, node);
            }
        }
        return new Restored(nodes, stale, 0, 0);
    }

    private (int Handles, int Lost) RestoreHandles(StateStore store)
    {
        int handles = 0, lost = 0;
        int high = store.HandleHighWater;
        for (int slot = 0; slot < high; slot++)
        {
            if (!store.TryReadHandle(slot, out var record)) continue;
            var node = FindNode(new NodeId(record.Node));
            int fd = -1;
            if (node is not null && Acquire(node, out var lease) == Errno.Ok)
            {
                using (lease)
                {
                    fd = record.IsDir
                        ? Libc.openat(lease.Fd, ".\0"u8, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0)
                        : Reopen(lease.Fd.Value, (record.Flags & ~(Libc.O_CREAT | Libc.O_EXCL | Libc.O_TRUNC)) | Libc.O_CLOEXEC);
                }
            }
            if (fd < 0 || node is null)
            {
                // The guest's next use of the handle answers EBADF; its RELEASE too, which the kernel ignores.
                store.FreeHandle(slot);
                lost++;
                continue;
            }
            var file = new OpenFile(record.Fh, node, new SafeFd(fd), record.IsDir, record.Flags & Libc.O_ACCMODE) { StoreSlot = slot };
            Interlocked.Increment(ref node.OpenCount);
            _files[file.Id] = file;
            handles++;
        }
        return (handles, lost);
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

    /// <summary>Writes a new node's record (its stripe lock is held and it is not yet published).</summary>
    private void RecordNode(Node node)
    {
        if (_store is not { } store) return;
        int slot = _nodeSlots!.Take();
        if (slot < 0)
        {
            if (Interlocked.Exchange(ref _storeFullLogged, 1) == 0) Log.StateStoreFull(_logger, store.NodeCapacity);
            return;
        }
        node.StoreSlot = slot;
        store.WriteNode(slot, node.Id, node.Lookups, node.Key.Dev, node.Key.Ino, node.Type, node.MountFd is null ? node.Handle : null);
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
    }
}
