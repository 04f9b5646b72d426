using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Text;
using Hypervisor.Interop;

namespace Hypervisor.Protocol.Recovery;

/// <summary>One node of the store: what a new daemon needs to serve a node id the guest holds.</summary>
/// <param name="Id">The FUSE node id.</param>
/// <param name="Lookups">The guest's lookup count.</param>
/// <param name="Dev">st_dev of the inode when it was looked up.</param>
/// <param name="Ino">st_ino of the inode when it was looked up.</param>
/// <param name="Type">The S_IFMT bits.</param>
/// <param name="Handle">A <c>struct file_handle</c> (header and bytes) on the share's own mount; empty when the node has none.</param>
/// <param name="Name">Where the node was last named, for a node without a handle (null: none, or none that passed
/// <see cref="StateStore.IsValidName"/>).</param>
/// <param name="Previous">The name slot that is not the current one (a rename staged there before its renameat2, or the
/// name before the last change); null as <paramref name="Name"/>. Only ever tried after <paramref name="Name"/>, and
/// accepted like it only when dev, ino and type match.</param>
public sealed record NodeRecord(ulong Id, long Lookups, ulong Dev, ulong Ino, uint Type, byte[] Handle, NodeName? Name = null, NodeName? Previous = null);

/// <summary>A name a node without a file handle can be reopened by: one component below its parent node.</summary>
/// <param name="Parent">The parent's node id (<c>FUSE_ROOT_ID</c>: the share's root).</param>
/// <param name="Bytes">One path component: 1..255 bytes, no '/' or NUL, never "." or "..".</param>
public sealed record NodeName(ulong Parent, byte[] Bytes);

/// <summary>One open file or directory of the store.</summary>
/// <param name="Fh">The FUSE file handle.</param>
/// <param name="Node">The node it was opened on.</param>
/// <param name="Flags">The open(2) flags the guest gave.</param>
/// <param name="IsDir">Opened by OPENDIR.</param>
public readonly record struct HandleRecord(ulong Fh, ulong Node, int Flags, bool IsDir);

/// <summary>What the vdev recorded about daemon restarts (shown by the daemon's status).</summary>
/// <param name="Count">Daemons started after the first.</param>
/// <param name="LastCause">Why the last one was started (empty before the first restart).</param>
/// <param name="LastWaitNs">Nanoseconds from noticing the old daemon's end to the new one serving, last restart.</param>
/// <param name="TotalWaitNs">The same, summed over every restart.</param>
/// <param name="Planned">Of <paramref name="Count"/>, the planned restarts (<c>vdev ctl restart</c>, cause "restart").</param>
public readonly record struct RestartRecord(uint Count, string LastCause, long LastWaitNs, long TotalWaitNs, uint Planned = 0);

/// <summary>The vdev's answer to a planned restart request (<see cref="StateStore.RequestRestart"/>).</summary>
/// <param name="NewPid">The pid of the daemon that serves now (0 when the restart failed).</param>
/// <param name="Error">Why the restart failed (the old daemon keeps serving); null when it succeeded.</param>
public readonly record struct RestartAnswer(int NewPid, string? Error);

/// <summary>
/// The share's state that must outlive a passthrough daemon, in a memfd the vdev creates and keeps, and that every
/// daemon of the share maps (it travels with the ring descriptors as <c>state=N</c>). It holds the negotiated INIT,
/// the live settings, a record per node id the guest holds (its file handle, or for a node without one its parent and
/// name, and its lookup count) and a record per open
/// file handle (its node and open flags), and the vdev's restart counters. Layout (little-endian, version 3):
/// <list type="bullet">
/// <item>0..4096, the header: magic u64 at 0 (written last), version u32 at 8, node capacity u32 at 12, handle
/// capacity u32 at 16, node and handle slots ever used (u32 at 20 and 24), the node id counter i64 at 32, the file
/// handle counter i64 at 40, INIT (valid u32 at 48, minor u32 at 52, flags u64 at 56, generation u64 at 64), the
/// live settings' active buffer u32 at 72, restarts (count u32 at 80, last wait ns i64 at 88, total wait ns i64 at 96,
/// cause length u32 at 104, planned restarts u32 at 108, cause UTF-8 at 128..384; planned restart requests: the
/// last request's number u32 at 384 (a daemon, Interlocked), the last answered number u32 at 388 (the vdev, written
/// last), the answer's new pid i32 at 392, error length u32 at 396, error UTF-8 at 512..1024; the lookup journal at
/// 1024..4096: <see cref="JournalSlots"/> entries of node id u64 and request unique u64).</item>
/// <item>4096..4096+2·<see cref="SettingsBufferSize"/>: two settings buffers (u32 length, then a serialized
/// ShareSettings); the writer fills the inactive one and then publishes its index.</item>
/// <item>Then the node table (<see cref="NodeRecordSize"/>-byte records: id u64 at 0 (0 = free, written last), lookups
/// i64 at 8, dev u64 at 16, ino u64 at 24, type u32 at 32, handle length u32 at 36, handle bytes at 40), then the
/// handle table (<see cref="HandleRecordSize"/>-byte records: fh u64 at 0 (0 = free, written last), node u64 at 8,
/// flags i32 at 16, is-directory u32 at 20).</item>
/// <item>Then the name table, one <see cref="NameRecordSize"/>-byte record per node slot, read only for a node record
/// whose handle length is 0: the current name slot u32 at 0 (0 = no name, 1 or 2), then two name slots of
/// <see cref="NameSlotSize"/> bytes at 8 and 8+<see cref="NameSlotSize"/> (parent node id u64 at 0, length u32 at 8,
/// the name's bytes at 12, at most <see cref="MaxName"/>). A name is changed by writing the slot that is not current
/// and then publishing its number, so a crash at any instant leaves the old name or the new one, never a mix. Only
/// nodes that have no handle touch this table: on a filesystem with handles its pages are never written.</item>
/// </list>
/// Every record is complete before its id is published with release semantics, and a daemon writes it before the
/// reply that makes the node or handle known to the guest, so a crash at any instant leaves the store naming at least
/// what the guest holds. Only the daemon writes records and INIT; only the vdev writes the restart counters. The
/// file is sparse: pages of slots never used cost nothing.
/// </summary>
public sealed unsafe class StateStore : IDisposable
{
    /// <summary>The header's magic: "hvstate1".</summary>
    public const ulong Magic = 0x3165746174737668;
    /// <summary>The layout version (3: the name table). The vdev and the daemon come from one build, so a store is only
    /// ever read by the layout that wrote it; <see cref="Attach"/> refuses any other.</summary>
    public const uint Version = 3;
    /// <summary>Bytes of the header.</summary>
    public const int HeaderSize = 4096;
    /// <summary>Bytes of each of the two settings buffers.</summary>
    public const int SettingsBufferSize = 32768;
    /// <summary>Bytes of a node record.</summary>
    public const int NodeRecordSize = 176;
    /// <summary>Bytes of a handle record.</summary>
    public const int HandleRecordSize = 32;
    /// <summary>Largest <c>struct file_handle</c> kept (header and MAX_HANDLE_SZ bytes).</summary>
    public const int MaxHandle = 136;
    /// <summary>Bytes of one name slot: parent u64, length u32, up to <see cref="MaxName"/> bytes, padded to 8.</summary>
    public const int NameSlotSize = 272;
    /// <summary>Bytes of a name record: the current slot's number and two name slots.</summary>
    public const int NameRecordSize = 8 + 2 * NameSlotSize;
    /// <summary>The longest name kept (NAME_MAX).</summary>
    public const int MaxName = 255;
    /// <summary>Default node capacity.</summary>
    public const int DefaultNodes = 1 << 20;
    /// <summary>Default handle capacity.</summary>
    public const int DefaultHandles = 1 << 16;

    private const int OffMagic = 0, OffVersion = 8, OffNodeCap = 12, OffHandleCap = 16, OffNodeHigh = 20, OffHandleHigh = 24;
    private const int OffNextNode = 32, OffNextHandle = 40;
    private const int OffInitValid = 48, OffInitMinor = 52, OffInitFlags = 56, OffInitGeneration = 64;
    private const int OffSettingsActive = 72;
    private const int OffRestarts = 80, OffLastWait = 88, OffTotalWait = 96, OffCauseLength = 104, OffPlanned = 108, OffCause = 128, MaxCause = 256;
    private const int OffRestartAsked = 384, OffRestartAnswered = 388, OffRestartPid = 392, OffRestartErrorLength = 396, OffRestartError = 512, MaxRestartError = 512;
    private const int OffJournal = 1024;

    /// <summary>
    /// Entries of the lookup journal: each says "LOOKUP <c>unique</c> has counted its lookup of node <c>id</c>",
    /// written after the count and before the reply. A daemon taking over the session undoes the count once when the
    /// vdev sends that LOOKUP again (the guest never got the old daemon's reply), so a repeated LOOKUP is counted once.
    /// </summary>
    public const int JournalSlots = (HeaderSize - OffJournal) / 16;

    private readonly SafeFd _fd;
    private readonly byte* _map;
    private readonly long _size;
    private readonly int _nodeCap;
    private readonly int _handleCap;
    private readonly object _settingsLock = new();
    private int _disposed;

    private StateStore(SafeFd fd, byte* map, long size, int nodes, int handles)
    {
        _fd = fd;
        _map = map;
        _size = size;
        _nodeCap = nodes;
        _handleCap = handles;
    }

    /// <summary>The memfd (close-on-exec until <see cref="SetInheritable"/>).</summary>
    public int Fd => _fd.Value;
    /// <summary>Node records at most.</summary>
    public int NodeCapacity => _nodeCap;
    /// <summary>Handle records at most.</summary>
    public int HandleCapacity => _handleCap;

    private static long Size(int nodes, int handles) =>
        HeaderSize + 2L * SettingsBufferSize + (long)nodes * (NodeRecordSize + NameRecordSize) + (long)handles * HandleRecordSize;

    /// <summary>Creates an empty store (the vdev, once per share).</summary>
    public static StateStore Create(int nodes = DefaultNodes, int handles = DefaultHandles)
    {
        if (nodes < 1 || handles < 1) throw new ArgumentOutOfRangeException(nameof(nodes), "A state store needs room for at least one node and one handle.");
        int fd = Libc.memfd_create("hv-state", Libc.MFD_CLOEXEC | Libc.MFD_ALLOW_SEALING);
        if (fd < 0) throw SyscallException.Last("memfd_create");
        var memfd = new SafeFd(fd);
        long size = Size(nodes, handles);
        try
        {
            if (Libc.ftruncate(memfd, size) != 0) throw SyscallException.Last("ftruncate of the state memfd");
            if (Libc.fcntl(fd, Libc.F_ADD_SEALS, Libc.F_SEAL_SHRINK | Libc.F_SEAL_GROW | Libc.F_SEAL_SEAL) != 0)
                throw SyscallException.Last("sealing the state memfd");
            var map = Map(fd, size);
            // Safe: the mapping is size bytes and every header offset is below HeaderSize.
            *(uint*)(map + OffVersion) = Version;
            *(uint*)(map + OffNodeCap) = (uint)nodes;
            *(uint*)(map + OffHandleCap) = (uint)handles;
            Volatile.Write(ref *(ulong*)(map + OffMagic), Magic);
            return new StateStore(memfd, map, size, nodes, handles);
        }
        catch
        {
            memfd.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Maps the store the vdev passed as <paramref name="fd"/> (a daemon; the descriptor becomes close-on-exec and
    /// owned by the store). Throws <see cref="InvalidDataException"/> when it is not a store of this version.
    /// </summary>
    public static StateStore Attach(int fd)
    {
        if (fd < 0 || Libc.fcntl(fd, Libc.F_GETFD, 0) < 0)
            throw new IOException($"The state store descriptor state={fd} is not open in this process; the vdev must let it be inherited.");
        Libc.fcntl(fd, Libc.F_SETFD, Libc.FD_CLOEXEC);
        long size = Libc.lseek(fd, 0, Libc.SEEK_END);
        if (size < HeaderSize) throw new InvalidDataException($"fd {fd} is not a state store (too small); pass the memfd StateStore.Create made.");
        var map = Map(fd, HeaderSize);
        ulong magic = Volatile.Read(ref *(ulong*)(map + OffMagic));
        uint version = *(uint*)(map + OffVersion);
        int nodes = (int)*(uint*)(map + OffNodeCap), handles = (int)*(uint*)(map + OffHandleCap);
        Libc.munmap((nint)map, HeaderSize);
        if (magic != Magic || version != Version || nodes < 1 || handles < 1 || Size(nodes, handles) != size)
            throw new InvalidDataException($"fd {fd} does not hold a state store of layout version {Version}; run a vdev and daemon from the same build.");
        return new StateStore(new SafeFd(fd), Map(fd, size), size, nodes, handles);
    }

    private static byte* Map(int fd, long size)
    {
        nint p = Libc.mmap(0, (nuint)size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd, 0);
        if (p == Libc.MAP_FAILED) throw SyscallException.Last("mmap of the state memfd");
        return (byte*)p;
    }

    /// <summary>Makes the memfd inheritable (true) while fuse_launcher is being started, close-on-exec again after.</summary>
    public void SetInheritable(bool inheritable)
    {
        int flags = Libc.fcntl(_fd.Value, Libc.F_GETFD, 0);
        if (flags < 0) return;
        Libc.fcntl(_fd.Value, Libc.F_SETFD, inheritable ? flags & ~Libc.FD_CLOEXEC : flags | Libc.FD_CLOEXEC);
    }

    // Safe (all accessors below): every offset is checked against the capacities fixed at map time, and the mapping
    // lives until Dispose, which the owner calls only once nothing uses the store.
    private ref long Long(int offset) => ref Unsafe.AsRef<long>(_map + offset);

    /// <summary>The node id counter: ids are drawn with Interlocked.Increment on it, never reused by any daemon of the share.</summary>
    public ref long NextNodeId => ref Long(OffNextNode);

    /// <summary>The file handle counter, as <see cref="NextNodeId"/>.</summary>
    public ref long NextHandle => ref Long(OffNextHandle);

    /// <summary>Node slots ever handed out (a restoring daemon scans these).</summary>
    public int NodeHighWater => Volatile.Read(ref *(int*)(_map + OffNodeHigh));

    /// <summary>Handle slots ever handed out.</summary>
    public int HandleHighWater => Volatile.Read(ref *(int*)(_map + OffHandleHigh));

    /// <summary>Raises the node high-water mark to cover <paramref name="slot"/> (the allocator's lock is held).</summary>
    public void CoverNode(int slot) { if (slot >= NodeHighWater) Volatile.Write(ref *(int*)(_map + OffNodeHigh), slot + 1); }

    /// <summary>Raises the handle high-water mark to cover <paramref name="slot"/> (the allocator's lock is held).</summary>
    public void CoverHandle(int slot) { if (slot >= HandleHighWater) Volatile.Write(ref *(int*)(_map + OffHandleHigh), slot + 1); }

    /// <summary>The negotiated INIT, when a session is live: the protocol minor, the agreed flags, the entry generation.</summary>
    public bool TryReadInit(out uint minor, out ulong flags, out ulong generation)
    {
        bool valid = Volatile.Read(ref *(uint*)(_map + OffInitValid)) != 0;
        minor = *(uint*)(_map + OffInitMinor);
        flags = *(ulong*)(_map + OffInitFlags);
        generation = *(ulong*)(_map + OffInitGeneration);
        return valid;
    }

    /// <summary>Records the session's INIT (before its reply is sent).</summary>
    public void WriteInit(uint minor, ulong flags, ulong generation)
    {
        Volatile.Write(ref *(uint*)(_map + OffInitValid), 0);
        *(uint*)(_map + OffInitMinor) = minor;
        *(ulong*)(_map + OffInitFlags) = flags;
        *(ulong*)(_map + OffInitGeneration) = generation;
        Volatile.Write(ref *(uint*)(_map + OffInitValid), 1);
    }

    /// <summary>The session ended (DESTROY, or a new INIT starts another).</summary>
    public void ClearInit() => Volatile.Write(ref *(uint*)(_map + OffInitValid), 0);

    /// <summary>Publishes the live settings (a serialized ShareSettings); false when they do not fit.</summary>
    public bool WriteSettings(ReadOnlySpan<byte> settings)
    {
        if (settings.Length > SettingsBufferSize - 4) return false;
        lock (_settingsLock)
        {
            uint next = Volatile.Read(ref *(uint*)(_map + OffSettingsActive)) == 1 ? 2u : 1u;
            var buffer = new Span<byte>(_map + HeaderSize + (next - 1) * SettingsBufferSize, SettingsBufferSize);
            BinaryPrimitives.WriteInt32LittleEndian(buffer, settings.Length);
            settings.CopyTo(buffer[4..]);
            Volatile.Write(ref *(uint*)(_map + OffSettingsActive), next);
        }
        return true;
    }

    /// <summary>The live settings last published, or null before any.</summary>
    public byte[]? ReadSettings()
    {
        uint active = Volatile.Read(ref *(uint*)(_map + OffSettingsActive));
        if (active is not (1 or 2)) return null;
        var buffer = new ReadOnlySpan<byte>(_map + HeaderSize + (active - 1) * SettingsBufferSize, SettingsBufferSize);
        int length = BinaryPrimitives.ReadInt32LittleEndian(buffer);
        return length < 0 || length > SettingsBufferSize - 4 ? null : buffer.Slice(4, length).ToArray();
    }

    /// <summary>
    /// Notes in journal slot <paramref name="slot"/> (modulo <see cref="JournalSlots"/>) that request
    /// <paramref name="unique"/> counted a lookup of <paramref name="node"/>: two plain stores. Threads sharing a slot
    /// can only lose or mismatch an entry, which leaves a count one too high, never one too low.
    /// </summary>
    public void Journal(int slot, ulong unique, ulong node)
    {
        var e = _map + OffJournal + (uint)slot % JournalSlots * 16;
        Volatile.Write(ref *(ulong*)e, node);
        Volatile.Write(ref *(ulong*)(e + 8), unique);
    }

    /// <summary>The journal's entries (unique, node), and empties it (a daemon taking over the session, before it serves).</summary>
    public Dictionary<ulong, ulong> TakeJournal()
    {
        var entries = new Dictionary<ulong, ulong>();
        for (int i = 0; i < JournalSlots; i++)
        {
            var e = _map + OffJournal + i * 16;
            ulong node = *(ulong*)e, unique = *(ulong*)(e + 8);
            if (node != 0 && unique != 0) entries[unique] = node;
            *(ulong*)e = 0;
            *(ulong*)(e + 8) = 0;
        }
        return entries;
    }

    /// <summary>
    /// Asks the vdev for a planned restart (a daemon's Restart call; the caller then rings the vdev's restart bell)
    /// and returns the request's number: the vdev answers it, and every request before it, with one restart.
    /// </summary>
    public uint RequestRestart() => (uint)Interlocked.Increment(ref Unsafe.AsRef<int>(_map + OffRestartAsked));

    /// <summary>The number of the last planned restart request (the vdev).</summary>
    public uint RestartRequested => Volatile.Read(ref *(uint*)(_map + OffRestartAsked));

    /// <summary>The answer to request <paramref name="request"/>, once the vdev gave it.</summary>
    public bool TryReadRestartAnswer(uint request, out RestartAnswer answer)
    {
        answer = default;
        uint answered = Volatile.Read(ref *(uint*)(_map + OffRestartAnswered));
        if ((int)(answered - request) < 0) return false;
        int n = (int)Math.Min(*(uint*)(_map + OffRestartErrorLength), MaxRestartError);
        answer = new RestartAnswer(*(int*)(_map + OffRestartPid), n == 0 ? null : Encoding.UTF8.GetString(new ReadOnlySpan<byte>(_map + OffRestartError, n)));
        return true;
    }

    /// <summary>Answers every planned restart request up to <paramref name="request"/> (the vdev): the pid now serving, or why it failed.</summary>
    public void AnswerRestart(uint request, int pid, string? error)
    {
        int n = 0;
        if (error is not null)
        {
            var bytes = Encoding.UTF8.GetBytes(error);
            n = Math.Min(bytes.Length, MaxRestartError);
            bytes.AsSpan(0, n).CopyTo(new Span<byte>(_map + OffRestartError, MaxRestartError));
        }
        *(int*)(_map + OffRestartPid) = pid;
        *(uint*)(_map + OffRestartErrorLength) = (uint)n;
        Volatile.Write(ref *(uint*)(_map + OffRestartAnswered), request);
    }

    /// <summary>Counts one restart (the vdev); <paramref name="planned"/> for a planned one.</summary>
    public void RecordRestart(string cause, long waitedNs, bool planned = false)
    {
        if (planned) *(uint*)(_map + OffPlanned) += 1;
        var bytes = Encoding.UTF8.GetBytes(cause);
        int n = Math.Min(bytes.Length, MaxCause);
        bytes.AsSpan(0, n).CopyTo(new Span<byte>(_map + OffCause, MaxCause));
        *(uint*)(_map + OffCauseLength) = (uint)n;
        *(long*)(_map + OffLastWait) = waitedNs;
        *(long*)(_map + OffTotalWait) += waitedNs;
        Volatile.Write(ref *(uint*)(_map + OffRestarts), *(uint*)(_map + OffRestarts) + 1);
    }

    /// <summary>The restart counters.</summary>
    public RestartRecord Restarts
    {
        get
        {
            uint count = Volatile.Read(ref *(uint*)(_map + OffRestarts));
            int n = (int)Math.Min(*(uint*)(_map + OffCauseLength), MaxCause);
            return new RestartRecord(count, Encoding.UTF8.GetString(new ReadOnlySpan<byte>(_map + OffCause, n)),
                *(long*)(_map + OffLastWait), *(long*)(_map + OffTotalWait), *(uint*)(_map + OffPlanned));
        }
    }

    private byte* Node(int slot)
    {
        if ((uint)slot >= (uint)_nodeCap) throw new ArgumentOutOfRangeException(nameof(slot));
        return _map + HeaderSize + 2L * SettingsBufferSize + (long)slot * NodeRecordSize;
    }

    private byte* Handle(int slot)
    {
        if ((uint)slot >= (uint)_handleCap) throw new ArgumentOutOfRangeException(nameof(slot));
        return _map + HeaderSize + 2L * SettingsBufferSize + (long)_nodeCap * NodeRecordSize + (long)slot * HandleRecordSize;
    }

    private byte* Name(int slot)
    {
        if ((uint)slot >= (uint)_nodeCap) throw new ArgumentOutOfRangeException(nameof(slot));
        return _map + HeaderSize + 2L * SettingsBufferSize + (long)_nodeCap * NodeRecordSize + (long)_handleCap * HandleRecordSize + (long)slot * NameRecordSize;
    }

    /// <summary>
    /// Whether <paramref name="name"/> is one path component a daemon may open below a directory: 1..<see cref="MaxName"/>
    /// bytes, no '/' and no NUL, neither "." nor "..". Names read from the store are checked with it before they are
    /// used (the store is writable by every daemon of the share, so what it holds is not trusted to be one).
    /// </summary>
    public static bool IsValidName(ReadOnlySpan<byte> name) =>
        name.Length is > 0 and <= MaxName && name.IndexOfAny((byte)'/', (byte)0) < 0
        && !(name[0] == (byte)'.' && (name.Length == 1 || (name.Length == 2 && name[1] == (byte)'.')));

    private static bool SlotHolds(byte* s, ulong parent, ReadOnlySpan<byte> name) =>
        *(ulong*)s == parent && *(uint*)(s + 8) == (uint)name.Length && name.SequenceEqual(new ReadOnlySpan<byte>(s + 12, name.Length));

    private static void FillSlot(byte* s, ulong parent, ReadOnlySpan<byte> name)
    {
        *(ulong*)s = parent;
        *(uint*)(s + 8) = (uint)name.Length;
        name.CopyTo(new Span<byte>(s + 12, MaxName));
    }

    /// <summary>
    /// Makes (<paramref name="parent"/>, <paramref name="name"/>) the node's current name: nothing when it is already,
    /// a switch of the current slot when the other one holds it (a staged rename), else the other slot is written and
    /// then published (release), so a crash leaves the old name or the new one. False (nothing written) when the name
    /// is not <see cref="IsValidName"/> or the parent is 0. The caller serializes the changes of one record.
    /// </summary>
    public bool SetName(int slot, ulong parent, ReadOnlySpan<byte> name)
    {
        if (parent == 0 || !IsValidName(name)) return false;
        var r = Name(slot);
        uint current = Volatile.Read(ref *(uint*)r);
        if (current is 1 or 2 && SlotHolds(r + 8 + (current - 1) * NameSlotSize, parent, name)) return true;
        uint other = current == 1 ? 2u : 1u;
        var s = r + 8 + (other - 1) * NameSlotSize;
        if (!SlotHolds(s, parent, name)) FillSlot(s, parent, name);
        Volatile.Write(ref *(uint*)r, other);
        return true;
    }

    /// <summary>
    /// Writes (<paramref name="parent"/>, <paramref name="name"/>) into the slot that is not current, leaving the
    /// current name in place: a rename about to be made, so that a crash between the rename and
    /// <see cref="SetName"/> leaves a record that still knows both names (a new daemon tries the current one, then
    /// this). Nothing when the name is current already or not valid.
    /// </summary>
    public void StageName(int slot, ulong parent, ReadOnlySpan<byte> name)
    {
        if (parent == 0 || !IsValidName(name)) return;
        var r = Name(slot);
        uint current = Volatile.Read(ref *(uint*)r);
        if (current is 1 or 2 && SlotHolds(r + 8 + (current - 1) * NameSlotSize, parent, name)) return;
        var s = r + 8 + (current == 1 ? 1 : 0) * NameSlotSize;
        if (!SlotHolds(s, parent, name)) FillSlot(s, parent, name);
    }

    /// <summary>The node has no name it can be reopened by (its record is restored stale unless its file is held open).</summary>
    public void ClearName(int slot) => Volatile.Write(ref *(uint*)Name(slot), 0u);

    private static NodeName? ReadSlot(byte* s, ulong self)
    {
        ulong parent = *(ulong*)s;
        uint n = *(uint*)(s + 8);
        if (parent == 0 || parent == self || n > MaxName) return null;
        var bytes = new ReadOnlySpan<byte>(s + 12, (int)n);
        return IsValidName(bytes) ? new NodeName(parent, bytes.ToArray()) : null;
    }

    /// <summary>
    /// Writes the record of a node without a handle, named (<paramref name="parent"/>, <paramref name="name"/>); a name
    /// that is not <see cref="IsValidName"/> (a node met through "..") leaves the record without one.
    /// </summary>
    public void WriteNode(int slot, ulong id, long lookups, ulong dev, ulong ino, uint type, ulong parent, ReadOnlySpan<byte> name)
    {
        var r = Node(slot);
        Volatile.Write(ref *(ulong*)r, 0UL);
        if (!SetName(slot, parent, name)) ClearName(slot);
        WriteNode(slot, id, lookups, dev, ino, type, ReadOnlySpan<byte>.Empty);
    }

    /// <summary>Writes a node record; <paramref name="handle"/> is a whole <c>struct file_handle</c>, or empty.</summary>
    public void WriteNode(int slot, ulong id, long lookups, ulong dev, ulong ino, uint type, ReadOnlySpan<byte> handle)
    {
        var r = Node(slot);
        Volatile.Write(ref *(ulong*)r, 0UL);
        *(long*)(r + 8) = lookups;
        *(ulong*)(r + 16) = dev;
        *(ulong*)(r + 24) = ino;
        *(uint*)(r + 32) = type;
        int n = handle.Length <= MaxHandle ? handle.Length : 0;
        *(uint*)(r + 36) = (uint)n;
        handle[..n].CopyTo(new Span<byte>(r + 40, MaxHandle));
        Volatile.Write(ref *(ulong*)r, id);
    }

    /// <summary>Updates a node's lookup count (a plain aligned 64-bit store: no syscall, no lock of its own).</summary>
    public void SetLookups(int slot, long lookups) => Volatile.Write(ref *(long*)(Node(slot) + 8), lookups);

    /// <summary>Frees a node record.</summary>
    public void FreeNode(int slot) => Volatile.Write(ref *(ulong*)Node(slot), 0UL);

    /// <summary>Reads a node record; false when the slot is free.</summary>
    public bool TryReadNode(int slot, out NodeRecord? record)
    {
        var r = Node(slot);
        ulong id = Volatile.Read(ref *(ulong*)r);
        record = null;
        if (id == 0) return false;
        int n = (int)Math.Min(*(uint*)(r + 36), (uint)MaxHandle);
        NodeName? name = null, previous = null;
        if (n == 0)
        {
            var names = Name(slot);
            uint current = Volatile.Read(ref *(uint*)names);
            if (current is 1 or 2)
            {
                name = ReadSlot(names + 8 + (current - 1) * NameSlotSize, id);
                previous = ReadSlot(names + 8 + (2 - current) * NameSlotSize, id);
            }
        }
        record = new NodeRecord(id, *(long*)(r + 8), *(ulong*)(r + 16), *(ulong*)(r + 24), *(uint*)(r + 32), new ReadOnlySpan<byte>(r + 40, n).ToArray(), name, previous);
        return true;
    }

    /// <summary>Writes a handle record.</summary>
    public void WriteHandle(int slot, ulong fh, ulong node, int flags, bool isDir)
    {
        var r = Handle(slot);
        Volatile.Write(ref *(ulong*)r, 0UL);
        *(ulong*)(r + 8) = node;
        *(int*)(r + 16) = flags;
        *(uint*)(r + 20) = isDir ? 1u : 0u;
        Volatile.Write(ref *(ulong*)r, fh);
    }

    /// <summary>Frees a handle record.</summary>
    public void FreeHandle(int slot) => Volatile.Write(ref *(ulong*)Handle(slot), 0UL);

    /// <summary>Reads a handle record; false when the slot is free.</summary>
    public bool TryReadHandle(int slot, out HandleRecord record)
    {
        var r = Handle(slot);
        ulong fh = Volatile.Read(ref *(ulong*)r);
        record = fh == 0 ? default : new HandleRecord(fh, *(ulong*)(r + 8), *(int*)(r + 16), *(uint*)(r + 20) != 0);
        return fh != 0;
    }

    /// <summary>Unmaps the store and closes the memfd.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Libc.munmap((nint)_map, (nuint)_size);
        _fd.Dispose();
    }
}

/// <summary>
/// Hands out record slots of a <see cref="StateStore"/> table: the lowest never-used slot, or one freed since. One
/// lock, taken when a node or handle is made or dropped (never per request on a known node).
/// </summary>
public sealed class StoreSlots
{
    private readonly object _lock = new();
    private readonly int _capacity;
    private readonly Action<int> _cover;
    private int[] _free = new int[64];
    private int _freeCount;
    private int _next;

    /// <summary>Slots 0..<paramref name="capacity"/>-1, of which those in <paramref name="used"/> below <paramref name="highWater"/> are taken.</summary>
    public StoreSlots(int capacity, int highWater, Func<int, bool> used, Action<int> cover)
    {
        _capacity = capacity;
        _cover = cover;
        _next = Math.Min(highWater, capacity);
        for (int i = _next - 1; i >= 0; i--) if (!used(i)) Push(i);
    }

    private void Push(int slot)
    {
        if (_freeCount == _free.Length) Array.Resize(ref _free, _free.Length * 2);
        _free[_freeCount++] = slot;
    }

    /// <summary>A free slot, or -1 when the table is full.</summary>
    public int Take()
    {
        lock (_lock)
        {
            if (_freeCount > 0) return _free[--_freeCount];
            if (_next == _capacity) return -1;
            _cover(_next);
            return _next++;
        }
    }

    /// <summary>Returns a slot whose record was freed.</summary>
    public void Give(int slot)
    {
        if (slot < 0) return;
        lock (_lock) Push(slot);
    }
}
