using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Hypervisor.Interop;

namespace Hypervisor.Protocol.Ring;

/// <summary>
/// A set of shared-memory rings between two processes: one submission/completion pair per request
/// queue, in one sealed memfd, with one eventfd doorbell per ring. The creator (vdev) produces
/// submissions and consumes completions; the attacher (daemon) does the opposite. Each ring is
/// single-producer/single-consumer: one thread at a time per <see cref="RingProducer"/> and per
/// <see cref="RingConsumer"/>; different queues may be served by different threads in parallel.
/// </summary>
/// <remarks>
/// Everything read from the shared memory is checked against this process's private copy of the
/// geometry before it is used, so a broken or hostile peer can make a ring report
/// <see cref="RingStatus.Broken"/> or <see cref="RingStatus.InvalidFrame"/>, but never make this
/// process read or write outside the mapping. The memfd is sealed against shrinking, so the peer
/// cannot turn accesses into SIGBUS either. Dispose only after this process's threads have stopped
/// using spans from the ring: they point into the mapping that disposal removes.
/// </remarks>
public sealed unsafe class ShmRingSet : IDisposable
{
    private readonly SafeFd _memfd;
    private readonly SafeFd[] _bells; // four per queue, in RingFds.Doorbells order
    private readonly RingQueue[] _queues;
    private readonly int _queueCount;
    private readonly long _directionBytes;
    private readonly int _maxFrameSize;
    private readonly long _totalSize;
    private byte* _base;
    private SafeFd? _peerPidFd;
    private readonly SafeFd? _ownPidFd; // the creator's pidfd of itself, passed to the attacher
    private readonly SafeFd? _guestMemory; // this side's end of the guest-memory channel
    private readonly SafeFd? _guestMemoryPeer; // the creator's copy of the attacher's end, passed to the attacher
    private int _peerPid;
    private volatile bool _peerGone;
    private volatile bool _closed;
    private int _disposed;
    private int _waiters;
    private long _spinTicks;

    /// <summary>This process's end of the set.</summary>
    public RingRole Role { get; }

    /// <summary>Number of request queues (submission/completion pairs).</summary>
    public int QueueCount => _queueCount;

    /// <summary>Largest frame, in bytes, a producer may reserve.</summary>
    public int MaxFrameSize => _maxFrameSize;

    /// <summary>Data bytes of each ring (a power of two; frames occupy their length plus 32, rounded up to 64).</summary>
    public long DirectionBytes => _directionBytes;

    /// <summary>
    /// This side's end of the guest-memory channel (a SOCK_SEQPACKET socket, <see cref="GuestMemoryMessage"/>), or
    /// null when the set has none (an attacher whose creator passed no <c>guestmem=</c>): then every payload travels
    /// in the ring. The set owns it and shuts it down on dispose, which ends a peer's blocking receive.
    /// </summary>
    public SafeHandle? GuestMemoryChannel => _guestMemory;

    /// <summary>The descriptor numbers of this set, to pass to the attaching process.</summary>
    public RingFds Fds { get; }

    /// <summary>
    /// How long a waiting call busy-polls the ring before arming its wake-up flag and sleeping on
    /// the doorbell. Spinning lets back-to-back frames flow without any system call; zero always
    /// sleeps at once. Default 50 µs: the first half pauses between looks, the second half yields
    /// the CPU between them.
    /// </summary>
    public TimeSpan SpinDuration
    {
        get => TimeSpan.FromSeconds((double)Volatile.Read(ref _spinTicks) / Stopwatch.Frequency);
        set => Volatile.Write(ref _spinTicks, value <= TimeSpan.Zero ? 0 : (long)(value.TotalSeconds * Stopwatch.Frequency));
    }

    private ShmRingSet(RingRole role, SafeFd memfd, SafeFd[] bells, byte* mapping,
                       int queueCount, long directionBytes, int maxFrameSize, long totalSize, SafeFd? ownPidFd = null,
                       SafeFd? guestMemory = null, SafeFd? guestMemoryPeer = null)
    {
        Role = role;
        _ownPidFd = ownPidFd;
        _guestMemory = guestMemory;
        _guestMemoryPeer = guestMemoryPeer;
        _memfd = memfd;
        _bells = bells;
        _base = mapping;
        _queueCount = queueCount;
        _directionBytes = directionBytes;
        _maxFrameSize = maxFrameSize;
        _totalSize = totalSize;
        SpinDuration = TimeSpan.FromMicroseconds(50);
        var bellFds = new int[bells.Length];
        for (int i = 0; i < bells.Length; i++) bellFds[i] = bells[i].Value;
        _queues = new RingQueue[queueCount];
        for (int q = 0; q < queueCount; q++)
        {
            // The creator produces into submission rings and consumes completion rings; the attacher the reverse.
            int produce = role == RingRole.Creator ? RingLayout.Submission : RingLayout.Completion;
            int consume = 1 - produce;
            var producer = new RingProducer(this, q, Control(q, produce), Data(q, produce), Bell(q, produce, false), Bell(q, produce, true));
            var consumer = new RingConsumer(this, q, Control(q, consume), Data(q, consume), Bell(q, consume, false), Bell(q, consume, true));
            _queues[q] = new RingQueue(q, producer, consumer);
        }
        Fds = new RingFds(memfd.Value, bellFds) { CreatorPidFd = ownPidFd?.Value, GuestMemoryFd = role == RingRole.Creator ? guestMemoryPeer?.Value : guestMemory?.Value };
    }

    private byte* Control(int q, int direction) => _base + RingLayout.ControlOffset(q, direction);

    private byte* Data(int q, int direction) => _base + RingLayout.DataOffset(_queueCount, _directionBytes, q, direction);

    private int Bell(int q, int direction, bool freed) => _bells[q * 4 + direction * 2 + (freed ? 1 : 0)].Value;

    /// <summary>
    /// Creates a ring set (the vdev side): a sealed memfd holding <paramref name="queueCount"/>
    /// submission/completion pairs and two eventfd doorbells per ring
    /// (one its consumer sleeps on, one its producer sleeps on). All descriptors are
    /// close-on-exec until <see cref="SetInheritable"/> says otherwise.
    /// </summary>
    /// <param name="queueCount">Request queues, 1 to <see cref="RingLayout.MaxQueues"/>.</param>
    /// <param name="maxFrameSize">Largest frame either side may send, in bytes (default 1 MiB + 4 KiB).</param>
    /// <param name="directionBytes">Data bytes per ring: 0 picks the smallest that fits (two largest frames);
    /// otherwise a power of two at least <see cref="RingLayout.MinDirectionBytes"/>.</param>
    public static ShmRingSet Create(int queueCount, int maxFrameSize = RingLayout.DefaultMaxFrameSize, long directionBytes = 0)
    {
        if (queueCount is < 1 or > RingLayout.MaxQueues)
            throw new ArgumentOutOfRangeException(nameof(queueCount), $"A ring set has between 1 and {RingLayout.MaxQueues} queues; pass a queue count in that range (got {queueCount}).");
        if (maxFrameSize < 64 || maxFrameSize > RingLayout.MaxMaxFrameSize)
            throw new ArgumentOutOfRangeException(nameof(maxFrameSize), $"The maximum frame size must be between 64 bytes and {RingLayout.MaxMaxFrameSize} bytes (got {maxFrameSize}).");
        long min = RingLayout.MinDirectionBytes(maxFrameSize);
        if (directionBytes == 0)
            directionBytes = min;
        else if (directionBytes < min || !BitOperations.IsPow2(directionBytes) || directionBytes > (1L << 34))
            throw new ArgumentOutOfRangeException(nameof(directionBytes), $"Ring capacity must be a power of two of at least {min} bytes (two largest frames) and at most 16 GiB; pass 0 for the default (got {directionBytes}).");

        long total = RingLayout.TotalSize(queueCount, directionBytes);
        int fd = Libc.memfd_create("hv-ring", Libc.MFD_CLOEXEC | Libc.MFD_ALLOW_SEALING);
        if (fd < 0) throw SyscallException.Last("memfd_create");
        var memfd = new SafeFd(fd);
        var bells = new SafeFd[queueCount * 4];
        byte* mapping = null;
        SafeFd? ownPid = null, guestMemory = null, guestMemoryPeer = null;
        try
        {
            if (Libc.ftruncate(memfd, total) != 0) throw SyscallException.Last("ftruncate of the ring memfd");
            // Sealed so that the peer can neither shrink the file (turning our accesses into SIGBUS)
            // nor grow it, nor remove the seals.
            if (Libc.fcntl(fd, Libc.F_ADD_SEALS, Libc.F_SEAL_SHRINK | Libc.F_SEAL_GROW | Libc.F_SEAL_SEAL) != 0)
                throw SyscallException.Last("sealing the ring memfd");
            mapping = Map(fd, total);
            for (int i = 0; i < bells.Length; i++) bells[i] = Libc.EventFd(Libc.EFD_NONBLOCK);
            // Safe: the mapping is total bytes long and every header offset is below HeaderSize.
            // The memfd starts zeroed, so indices, flags and pids need no initialisation.
            *(uint*)(mapping + RingLayout.OffVersion) = RingLayout.Version;
            *(uint*)(mapping + RingLayout.OffHeaderSize) = RingLayout.HeaderSize;
            *(uint*)(mapping + RingLayout.OffQueueCount) = (uint)queueCount;
            *(uint*)(mapping + RingLayout.OffRecordAlignment) = RingLayout.RecordAlignment;
            *(ulong*)(mapping + RingLayout.OffDirectionBytes) = (ulong)directionBytes;
            *(uint*)(mapping + RingLayout.OffMaxFrameSize) = (uint)maxFrameSize;
            *(uint*)(mapping + RingLayout.OffRecordHeaderSize) = RingLayout.RecordHeaderSize;
            *(ulong*)(mapping + RingLayout.OffTotalSize) = (ulong)total;
            *(int*)(mapping + RingLayout.OffCreatorPid) = Environment.ProcessId;
            // The magic goes last, with release semantics, so a reader that sees it sees the rest.
            Volatile.Write(ref *(ulong*)(mapping + RingLayout.OffMagic), RingLayout.Magic);
            // A pidfd of the creator travels with the ring: an attacher in a pid namespace of its own cannot name the
            // creator by pid, but can poll this descriptor for its exit.
            int self = Libc.pidfd_open(Environment.ProcessId, 0);
            if (self < 0) throw SyscallException.Last("pidfd_open of this process");
            ownPid = new SafeFd(self);
            // The guest-memory channel: message boundaries keep a table and its descriptors together.
            Span<int> pair = stackalloc int[2];
            if (Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_SEQPACKET | Libc.SOCK_CLOEXEC, 0, pair) != 0)
                throw SyscallException.Last("socketpair for the guest-memory channel");
            guestMemory = new SafeFd(pair[0]);
            guestMemoryPeer = new SafeFd(pair[1]);
            return new ShmRingSet(RingRole.Creator, memfd, bells, mapping, queueCount, directionBytes, maxFrameSize, total, ownPid, guestMemory, guestMemoryPeer);
        }
        catch
        {
            if (mapping != null) Libc.munmap((nint)mapping, (nuint)total);
            foreach (var h in bells) h?.Dispose();
            ownPid?.Dispose();
            guestMemory?.Dispose();
            guestMemoryPeer?.Dispose();
            memfd.Dispose();
            throw;
        }
    }

    /// <summary>Attaches to a ring set from a descriptor string (see <see cref="RingFds"/>).</summary>
    public static ShmRingSet Attach(string descriptor) => Attach(RingFds.Parse(descriptor));

    /// <summary>
    /// Attaches to a ring set whose descriptors this process inherited (the daemon side). Takes
    /// ownership of the descriptors (closes them on dispose) and marks them close-on-exec so that
    /// this process's own children do not inherit them. Records this process's pid in the header
    /// and starts watching the creator's pid for exit.
    /// </summary>
    /// <exception cref="InvalidDataException">The memfd does not hold a ring set this version understands.</exception>
    /// <exception cref="IOException">A descriptor is not open or a system call failed.</exception>
    public static ShmRingSet Attach(RingFds fds)
    {
        int n = fds.QueueCount;
        CheckInherited(fds.MemFd, "memfd");
        for (int i = 0; i < fds.Doorbells.Count; i++)
            CheckInherited(fds.Doorbells[i], "doorbell " + RingFds.DoorbellKey(i));
        if (fds.CreatorPidFd is { } creatorFd) CheckInherited(creatorFd, "creator");
        if (fds.GuestMemoryFd is { } guestMemoryFd) CheckInherited(guestMemoryFd, "guestmem");
        int seals = Libc.fcntl(fds.MemFd, Libc.F_GET_SEALS, 0);
        if (seals < 0 || (seals & Libc.F_SEAL_SHRINK) == 0)
            throw new InvalidDataException($"fd {fds.MemFd} is not a memfd sealed against shrinking; pass the memfd that ShmRingSet.Create made.");
        long size = Libc.lseek(fds.MemFd, 0, Libc.SEEK_END);
        if (size < 0) throw SyscallException.Last("lseek on the ring memfd");
        if (size < RingLayout.HeaderSize)
            throw new InvalidDataException($"The ring memfd (fd {fds.MemFd}) is only {size} bytes, smaller than a ring header; pass the memfd that ShmRingSet.Create made.");

        byte* mapping = Map(fds.MemFd, size);
        try
        {
            // Safe: size >= HeaderSize, so every header field is inside the mapping. Each field
            // is read once into a local and only the locals are checked and kept.
            ulong magic = Volatile.Read(ref *(ulong*)(mapping + RingLayout.OffMagic));
            uint version = *(uint*)(mapping + RingLayout.OffVersion);
            uint headerSize = *(uint*)(mapping + RingLayout.OffHeaderSize);
            uint queueCount = *(uint*)(mapping + RingLayout.OffQueueCount);
            uint alignment = *(uint*)(mapping + RingLayout.OffRecordAlignment);
            ulong directionBytes = *(ulong*)(mapping + RingLayout.OffDirectionBytes);
            uint maxFrame = *(uint*)(mapping + RingLayout.OffMaxFrameSize);
            uint recordHeader = *(uint*)(mapping + RingLayout.OffRecordHeaderSize);
            ulong total = *(ulong*)(mapping + RingLayout.OffTotalSize);
            int creatorPid = *(int*)(mapping + RingLayout.OffCreatorPid);
            int attacherPid = Volatile.Read(ref *(int*)(mapping + RingLayout.OffAttacherPid));

            if (magic != RingLayout.Magic)
                throw new InvalidDataException($"fd {fds.MemFd} does not hold a ring set (bad magic); pass the memfd that ShmRingSet.Create made.");
            if (version != RingLayout.Version || headerSize != RingLayout.HeaderSize || alignment != RingLayout.RecordAlignment || recordHeader != RingLayout.RecordHeaderSize)
                throw new InvalidDataException($"The ring set in fd {fds.MemFd} has layout version {version}, this build speaks {RingLayout.Version}; run a vdev and daemon from the same build.");
            if (queueCount != (uint)n)
                throw new InvalidDataException($"The ring set has {queueCount} queues but the descriptor names {n}; pass the descriptor string the creator formatted.");
            if (maxFrame < 64 || maxFrame > RingLayout.MaxMaxFrameSize || directionBytes > (1UL << 34)
                || !BitOperations.IsPow2(directionBytes) || (long)directionBytes < RingLayout.MinDirectionBytes((int)maxFrame)
                || total != (ulong)RingLayout.TotalSize(n, (long)directionBytes) || (long)total != size || creatorPid <= 0)
                throw new InvalidDataException($"The ring set header in fd {fds.MemFd} has an impossible geometry; pass the memfd that ShmRingSet.Create made.");

            // The indices start at zero on both sides; a second attacher would start from a
            // state the first one left behind, so a ring set serves exactly one attach.
            if (attacherPid != 0)
                throw new InvalidDataException($"The ring set in fd {fds.MemFd} was already attached by pid {attacherPid}; a ring set serves one daemon, so create a new one for a restarted daemon.");

            var memfd = new SafeFd(fds.MemFd);
            var bells = new SafeFd[fds.Doorbells.Count];
            for (int i = 0; i < bells.Length; i++) bells[i] = new SafeFd(fds.Doorbells[i]);
            SafeFd? guestMemory = null;
            if (fds.GuestMemoryFd is { } channel)
            {
                SetCloexec(channel, true);
                guestMemory = new SafeFd(channel);
            }
            var set = new ShmRingSet(RingRole.Attacher, memfd, bells, mapping, n, (long)directionBytes, (int)maxFrame, size, guestMemory: guestMemory);
            set.SetInheritable(false);
            set._peerPid = creatorPid;
            if (fds.CreatorPidFd is { } pidfd)
            {
                SetCloexec(pidfd, true);
                set._peerPidFd = new SafeFd(pidfd);
            }
            Volatile.Write(ref *(int*)(mapping + RingLayout.OffAttacherPid), Environment.ProcessId);
            set.EnsurePeerWatch();
            return set;
        }
        catch
        {
            Libc.munmap((nint)mapping, (nuint)size);
            throw;
        }
    }

    private static void CheckInherited(int fd, string name)
    {
        if (fd < 0 || Libc.fcntl(fd, Libc.F_GETFD, 0) < 0)
            throw new IOException($"Ring descriptor {name}={fd} is not open in this process; the spawning process must let it be inherited (clear close-on-exec, e.g. ShmRingSet.SetInheritable(true)) before starting this one.");
    }

    private static byte* Map(int fd, long size)
    {
        nint p = Libc.mmap(0, (nuint)size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, fd, 0);
        if (p == Libc.MAP_FAILED) throw SyscallException.Last("mmap of the ring memfd");
        return (byte*)p;
    }

    /// <summary>The queue with the given index (0-based).</summary>
    public RingQueue GetQueue(int index)
    {
        if ((uint)index >= (uint)_queueCount)
            throw new ArgumentOutOfRangeException(nameof(index), $"Queue {index} does not exist; this ring set has queues 0 to {_queueCount - 1}.");
        return _queues[index];
    }

    /// <summary>
    /// Clears (true) or sets (false) close-on-exec on every descriptor of the set. The creator
    /// calls this with true just before starting the process that must inherit the ring and with
    /// false right after, since every child started in between inherits the descriptors too.
    /// </summary>
    public void SetInheritable(bool inheritable)
    {
        ThrowIfDisposed();
        SetCloexec(_memfd.Value, !inheritable);
        foreach (var bell in _bells) SetCloexec(bell.Value, !inheritable);
        if (_ownPidFd is not null) SetCloexec(_ownPidFd.Value, !inheritable);
        if (_guestMemoryPeer is not null) SetCloexec(_guestMemoryPeer.Value, !inheritable);
    }

    private static void SetCloexec(int fd, bool cloexec)
    {
        if (Libc.fcntl(fd, Libc.F_SETFD, cloexec ? Libc.FD_CLOEXEC : 0) != 0)
            throw SyscallException.Last("fcntl(F_SETFD) on a ring descriptor");
    }

    /// <summary>
    /// Tells the creator which process the peer is (e.g. the daemon pid the launcher reported), so
    /// that its death is detected even before it attaches. Without this, the creator watches the
    /// pid the attacher records in the header once it attaches.
    /// </summary>
    public void SetPeerProcess(int pid)
    {
        ThrowIfDisposed();
        if (pid <= 0) throw new ArgumentOutOfRangeException(nameof(pid), $"A peer pid must be positive (got {pid}).");
        lock (_queues)
        {
            _peerPidFd?.Dispose();
            _peerPidFd = null;
            _peerGone = false;
            _peerPid = pid;
        }
        EnsurePeerWatch();
    }

    /// <summary>The peer's pid as far as it is known (0 before it attached, for the creator).</summary>
    public int PeerPid
    {
        get
        {
            if (_peerPid != 0) return _peerPid;
            int recorded = Volatile.Read(ref *(int*)(_base + (Role == RingRole.Creator ? RingLayout.OffAttacherPid : RingLayout.OffCreatorPid)));
            return recorded > 0 ? recorded : 0;
        }
    }

    /// <summary>
    /// A pidfd that becomes readable when the peer process exits, for callers that wait in their
    /// own epoll loop; -1 while the peer is not known yet (creator before attach) or already gone.
    /// Owned by the set: do not close it.
    /// </summary>
    public int PeerExitFd
    {
        get
        {
            ThrowIfDisposed();
            var pidfd = EnsurePeerWatch();
            return pidfd is null ? -1 : pidfd.Value;
        }
    }

    /// <summary>Whether the peer has set its closed flag.</summary>
    internal bool PeerClosed
        => Volatile.Read(ref *(uint*)(_base + (Role == RingRole.Creator ? RingLayout.OffAttacherClosed : RingLayout.OffCreatorClosed))) != 0;

    /// <summary>Whether this side closed the set.</summary>
    public bool IsClosed => _closed;

    /// <summary>Opens the peer's pidfd once its pid is known; returns it, or null if no peer is known yet.</summary>
    private SafeFd? EnsurePeerWatch()
    {
        var existing = Volatile.Read(ref _peerPidFd);
        if (existing is not null || _peerGone) return existing;
        lock (_queues)
        {
            if (_peerPidFd is not null || _peerGone) return _peerPidFd;
            int pid = PeerPid;
            if (pid <= 0) return null;
            int fd = Libc.pidfd_open(pid, 0);
            if (fd < 0)
            {
                int errno = Libc.LastErrno;
                if (errno == Libc.ESRCH) { _peerGone = true; return null; }
                throw new SyscallException($"pidfd_open of the ring peer (pid {pid})", errno);
            }
            _peerPid = pid;
            var handle = new SafeFd(fd);
            Volatile.Write(ref _peerPidFd, handle);
            return handle;
        }
    }

    internal long SpinTicks => Volatile.Read(ref _spinTicks);

    /// <summary>
    /// Marks a thread as inside a waiting call, so that <see cref="Dispose"/> does not unmap the
    /// memory under it. Returns false (and does not enter) once the set is closed or disposed.
    /// </summary>
    internal bool EnterWait()
    {
        Interlocked.Increment(ref _waiters);
        if (_closed || Volatile.Read(ref _disposed) != 0)
        {
            Interlocked.Decrement(ref _waiters);
            return false;
        }
        return true;
    }

    internal void ExitWait() => Interlocked.Decrement(ref _waiters);

    /// <summary>
    /// Sleeps on a doorbell until it rings, the peer dies, the token is cancelled or the deadline
    /// passes. Returns Ok when woken (the caller re-checks its ring), else the reason.
    /// </summary>
    internal RingStatus Sleep(int doorbellFd, ref SafeFd? cancelFd, long deadlineMs, CancellationToken ct)
    {
        if (ct.IsCancellationRequested) return RingStatus.Canceled;
        if (_closed) return RingStatus.Closed;
        var pidfd = EnsurePeerWatch();
        if (_peerGone) return RingStatus.PeerDead;
        int timeout = -1;
        if (deadlineMs != long.MaxValue)
        {
            long left = deadlineMs - Environment.TickCount64;
            if (left <= 0) return RingStatus.Timeout;
            timeout = (int)Math.Min(left, int.MaxValue);
        }
        // Until the peer's pid is known, wake up regularly to look for it in the header.
        if (pidfd is null && (timeout < 0 || timeout > 50)) timeout = 50;

        Span<PollFd> fds = stackalloc PollFd[3];
        int count = 0;
        fds[count++] = new PollFd { Fd = doorbellFd, Events = Libc.POLLIN };
        int pidIndex = -1, cancelIndex = -1;
        if (pidfd is not null) { pidIndex = count; fds[count++] = new PollFd { Fd = pidfd.Value, Events = Libc.POLLIN }; }
        CancellationTokenRegistration registration = default;
        if (ct.CanBeCanceled)
        {
            // The private cancellation bell is zero here: it is only ever rung by a cancelled
            // token's callback, and is reset below after any wait whose token was cancelled.
            cancelFd ??= Libc.EventFd(Libc.EFD_NONBLOCK);
            cancelIndex = count;
            fds[count++] = new PollFd { Fd = cancelFd.Value, Events = Libc.POLLIN };
            registration = ct.UnsafeRegister(static s => Libc.EventFdSignal(((SafeFd)s!).Value), cancelFd);
        }
        try
        {
            int n = Libc.poll(fds, (nuint)count, timeout);
            if (n < 0)
            {
                int errno = Libc.LastErrno;
                if (errno == Libc.EINTR) return RingStatus.Ok;
                throw new SyscallException("poll on a ring doorbell", errno);
            }
            if (pidIndex >= 0 && (fds[pidIndex].Revents & Libc.POLLIN) != 0)
            {
                _peerGone = true;
                return RingStatus.PeerDead;
            }
            if (cancelIndex >= 0 && ct.IsCancellationRequested) return RingStatus.Canceled;
            if (n == 0 && deadlineMs != long.MaxValue && Environment.TickCount64 >= deadlineMs) return RingStatus.Timeout;
            return RingStatus.Ok;
        }
        finally
        {
            // After Dispose the callback has either run or never will.
            registration.Dispose();
            if (cancelIndex >= 0 && ct.IsCancellationRequested) Libc.EventFdDrain(cancelFd!.Value);
        }
    }

    /// <summary>
    /// Closes the set in an orderly way: sets this side's closed flag in the header and rings every
    /// doorbell, so that a peer waiting anywhere wakes up and sees <see cref="RingStatus.Closed"/>
    /// (its consumers once they have drained what is already committed). Idempotent.
    /// </summary>
    public void Close()
    {
        if (Volatile.Read(ref _disposed) != 0 || _closed) return;
        _closed = true;
        Volatile.Write(ref *(uint*)(_base + (Role == RingRole.Creator ? RingLayout.OffCreatorClosed : RingLayout.OffAttacherClosed)), 1);
        Interlocked.MemoryBarrier();
        foreach (var bell in _bells) Libc.EventFdSignal(bell.Value);
    }

    /// <summary>
    /// Rings every doorbell of a closed set once more, so that a peer still asleep on one of them wakes up and sees the
    /// close. For a peer expected to stop once closed that has not (vdev/README.md, "Planned restart"). Does nothing
    /// before <see cref="Close"/>; safe against a concurrent <see cref="Dispose"/> (a bell already closed is skipped).
    /// </summary>
    public void RingClosedAgain()
    {
        if (!_closed) return;
        foreach (var bell in _bells)
        {
            bool added = false;
            try
            {
                bell.DangerousAddRef(ref added);
                Libc.EventFdSignal(bell.Value);
            }
            catch (ObjectDisposedException)
            {
            }
            finally
            {
                if (added) bell.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Closes the set (see <see cref="Close"/>), waits (up to 2 s) for this process's threads
    /// blocked in a waiting call to return <see cref="RingStatus.Closed"/>, then unmaps the memory
    /// and closes every descriptor. A thread still inside a waiting call after that keeps the
    /// mapping and descriptors alive (they are leaked rather than pulled from under it).
    /// </summary>
    public void Dispose()
    {
        Close();
        if (Volatile.Read(ref _disposed) != 0) return;
        var sw = Stopwatch.StartNew();
        while (Volatile.Read(ref _waiters) != 0 && sw.ElapsedMilliseconds < 2000) Thread.Sleep(1);
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        // A thread still blocked in a waiting call keeps the mapping and the descriptors it polls:
        // leaking them is better than pulling memory or reusable fd numbers from under it.
        if (Volatile.Read(ref _waiters) != 0) return;
        Libc.munmap((nint)_base, (nuint)_totalSize);
        _memfd.Dispose();
        foreach (var h in _bells) h.Dispose();
        _peerPidFd?.Dispose();
        _ownPidFd?.Dispose();
        _guestMemoryPeer?.Dispose();
        if (_guestMemory is not null)
        {
            // shutdown, not close alone, ends a receive another thread of this process is blocked in.
            Libc.shutdown(_guestMemory, Libc.SHUT_RDWR);
            _guestMemory.Dispose();
        }
        foreach (var q in _queues)
        {
            q.Producer.DisposeCancelFd();
            q.Consumer.DisposeCancelFd();
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _disposed) != 0) Throw();
        static void Throw() => throw new ObjectDisposedException(nameof(ShmRingSet));
    }

    /// <summary>Test hook: the start of the mapping, to corrupt the shared memory on purpose.</summary>
    internal byte* BaseForTests => _base;
}

/// <summary>One request queue of a ring set: this process's producer and consumer ends.</summary>
public sealed class RingQueue
{
    internal RingQueue(int index, RingProducer producer, RingConsumer consumer)
    {
        Index = index;
        Producer = producer;
        Consumer = consumer;
    }

    /// <summary>The queue's index in the set.</summary>
    public int Index { get; }

    /// <summary>The ring this process writes: submissions for the creator, completions for the attacher.</summary>
    public RingProducer Producer { get; }

    /// <summary>The ring this process reads: completions for the creator, submissions for the attacher.</summary>
    public RingConsumer Consumer { get; }
}
