using System.Buffers.Binary;
using Hypervisor.Interop;
using Hypervisor.Protocol.Fuse;
using Hypervisor.Protocol.Ring;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Vdev.Device;

/// <summary>Starts the daemon that replaces one that ended (the vdev's share supervisor).</summary>
public interface IDaemonRelauncher
{
    /// <summary>The ring set of the daemon serving now.</summary>
    ShmRingSet Rings { get; }

    /// <summary>
    /// No queue reads <paramref name="rings"/> (a replaced daemon's ring set) any more: its memory and descriptors can
    /// go.
    /// </summary>
    void ReleaseRings(ShmRingSet rings);

    /// <summary>
    /// Starts a new daemon with the share's state store and live settings after the one on <paramref name="dead"/>
    /// ended (<paramref name="cause"/> says how; <paramref name="noticed"/> is the <see cref="System.Diagnostics.Stopwatch"/>
    /// timestamp when it was noticed) and returns its ring set, or null when the share is not to be relaunched (relaunch
    /// off, a crash loop, or the start failed; the reason is logged once).
    /// </summary>
    Task<ShmRingSet?> RelaunchAsync(ShmRingSet dead, string cause, long noticed);

    /// <summary>
    /// The share's transport now runs (a device started), or no longer does (null): a planned restart hands the guest
    /// over through it (<see cref="RecoveringTransport.HandOverAsync"/>).
    /// </summary>
    void TransportChanged(RecoveringTransport? transport) { }
}

/// <summary>
/// The share's transport when its daemon can be replaced (vdev/README.md, "Surviving a daemon crash"): a
/// <see cref="ShmRingTransport"/> over the ring set of the daemon serving now, and when that daemon ends, a new one
/// started through <see cref="IDaemonRelauncher"/> on a fresh ring set while the guest's requests wait for it.
/// <para>Each queue's worker remembers, per chain head, the request it submitted and whether its frame reached the
/// ring (two array writes per request, on the worker's own arrays). When a new daemon serves, each worker first
/// returns the replies the old daemon committed before it died, then settles every chain still in flight: a frame the
/// old daemon never got is sent to the new one; one it may have got is sent again only when its opcode's repetition
/// cannot change the outcome (<see cref="Replayable"/>), and otherwise answered EIO.</para>
/// <para>Guest memory tables (<see cref="IGuestMemoryTransport"/>) go to the serving daemon's transport; the latest one
/// is remembered and handed to each new daemon before it serves, so that a relaunched daemon maps the guest's memory
/// too. A table marks itself mapped per transport, so frames never name a table the new daemon was not handed.</para>
/// </summary>
public sealed partial class RecoveringTransport : IPolledFuseTransport, IGuestMemoryTransport
{
    /// <summary>Size of C <c>struct fuse_in_header</c>.</summary>
    private const int InHeader = 40;
    private const int OAppend = 0x400, OTrunc = 0x200, OCreat = 0x40;

    private sealed class Generation(int number, ShmRingSet rings)
    {
        public readonly int Number = number;
        public readonly ShmRingSet Rings = rings;
        public ShmRingTransport Transport = null!;
        /// <summary>Set once the daemon is known to have ended.</summary>
        public volatile bool Dead;
        /// <summary>Queues whose worker uses this generation (guarded by the transport's lock).</summary>
        public int Users;
        /// <summary>Its ring set was handed back (guarded by the transport's lock): no queue may start using it.</summary>
        public bool Released;
        /// <summary>A planned restart replaces it: no queue sends it another frame; each takes the replies still due.</summary>
        public volatile bool Draining;
        /// <summary>It answered everything and its successor takes over (guarded by the lock): its end is no crash.</summary>
        public volatile bool HandedOver;
    }

    /// <summary>Hands the inner transport's reports to the device, except its failure, which starts a relaunch.</summary>
    private sealed class GenerationSink(RecoveringTransport owner, Generation generation) : IFuseCompletionSink
    {
        public bool Complete(ulong tag, ReadOnlySpan<byte> reply) => owner._device.Complete(tag, reply);
        public bool CompleteQuietly(ulong tag, ReadOnlySpan<byte> reply) => owner._device.CompleteQuietly(tag, reply);
        public void NotifyGuest(QueueIndex queue) => owner._device.NotifyGuest(queue);
        public void TransportFailed(string reason) => owner.DaemonEnded(generation, reason);
    }

    private readonly IDaemonRelauncher _relauncher;
    private readonly IFuseCompletionSink _device;
    private readonly FuseDeviceInfo _info;
    private readonly TimeSpan _wait;
    private readonly ILogger _log;
    private readonly object _lock = new();
    private volatile Generation _current;
    private int _numbers;
    private volatile Task<bool>? _recovery;
    private volatile string? _failedFor;
    // Serializes handing memory tables to a daemon with the switch to a new daemon, so that a new daemon gets the
    // latest table; taken before _lock.
    private readonly object _memoryLock = new();
    // The latest table the device installed, without a reference: a new daemon gets it only while it is still mapped
    // (TryAddRef), which it is as long as it is the device's table.
    private Virtio.GuestMemoryTable? _latestMemory;

    // Per queue, owned by that queue's worker thread.
    // Per queue, at index queue * BusyStride (a cache line each): 1 while the queue's worker is sending a frame to the
    // generation it read, so that a planned restart knows when no frame can still reach the draining daemon.
    private readonly int[] _submitting;
    private const int BusyStride = 16;
    // The planned restart under way: completes when its new daemon serves or it gave up.
    private volatile Task? _handover;
    private readonly Generation?[] _queueGeneration;
    private readonly Generation?[] _armed;
    private readonly VirtqueueRequest?[][] _pending;
    private readonly ulong[][] _pendingTag;
    private readonly int[][] _sentIn;

    private readonly Thread _watcher;
    private readonly SafeFd _stop = Libc.EventFd(Libc.EFD_NONBLOCK);
    private readonly SafeFd _newGeneration = Libc.EventFd(Libc.EFD_NONBLOCK);
    // Readable from the end of a relaunch until the next daemon ends (drained then, under the lock): workers waiting
    // for a new daemon sleep on it.
    private readonly SafeFd _recovered = Libc.EventFd(Libc.EFD_NONBLOCK);
    private volatile bool _disposed;

    private RecoveringTransport(IDaemonRelauncher relauncher, FuseDeviceInfo info, IFuseCompletionSink device, TimeSpan wait, ILogger log)
    {
        _relauncher = relauncher;
        _info = info;
        _device = device;
        _wait = wait;
        _log = log;
        int queues = 1 + info.RequestQueues;
        _submitting = new int[queues * BusyStride];
        _queueGeneration = new Generation?[queues];
        _armed = new Generation?[queues];
        _pending = new VirtqueueRequest?[queues][];
        _pendingTag = new ulong[queues][];
        _sentIn = new int[queues][];
        for (int q = 0; q < queues; q++)
        {
            _pending[q] = new VirtqueueRequest?[info.QueueSize];
            _pendingTag[q] = new ulong[info.QueueSize];
            _sentIn[q] = new int[info.QueueSize];
        }
        _current = NewGeneration(relauncher.Rings);
        _watcher = new Thread(Watch) { IsBackground = true, Name = $"vdev {info.Tag} daemon watch" };
        _watcher.Start();
        relauncher.TransportChanged(this);
    }

    /// <summary>
    /// A factory for <see cref="VhostUser.VhostUserDevice.RunAsync"/>: requests that arrive while a new daemon starts wait
    /// up to <paramref name="wait"/> for it, then are answered EIO.
    /// </summary>
    public static IFuseTransportFactory Factory(IDaemonRelauncher relauncher, TimeSpan wait, ILogger log) => new RecoveringFactory(relauncher, wait, log);

    private sealed class RecoveringFactory(IDaemonRelauncher relauncher, TimeSpan wait, ILogger log) : IFuseTransportFactory
    {
        public IFuseTransport Create(FuseDeviceInfo device, IFuseCompletionSink sink) => new RecoveringTransport(relauncher, device, sink, wait, log);
    }

    private Generation NewGeneration(ShmRingSet rings)
    {
        var generation = new Generation(Interlocked.Increment(ref _numbers), rings);
        var factory = ShmRingTransport.Factory(rings, _log);
        generation.Transport = (ShmRingTransport)factory.Create(_info, new GenerationSink(this, generation));
        return generation;
    }

    /// <summary>
    /// Whether a request the dead daemon may have executed is sent again to the new one: true where repeating it
    /// cannot change the outcome (vdev/README.md has the table). <paramref name="frame"/> is the frame's start.
    /// </summary>
    internal static bool Replayable(FuseOpcode opcode, ReadOnlySpan<byte> frame) => opcode switch
    {
        FuseOpcode.Lookup or FuseOpcode.GetAttr or FuseOpcode.ReadLink or FuseOpcode.Read or FuseOpcode.StatFs
            or FuseOpcode.GetXAttr or FuseOpcode.ListXAttr or FuseOpcode.Flush or FuseOpcode.FSync or FuseOpcode.FSyncDir
            or FuseOpcode.ReadDir or FuseOpcode.ReadDirPlus or FuseOpcode.Access or FuseOpcode.GetLk or FuseOpcode.LSeek
            or FuseOpcode.Statx or FuseOpcode.SyncFs or FuseOpcode.SetAttr or FuseOpcode.FAllocate or FuseOpcode.OpenDir
            or FuseOpcode.Release or FuseOpcode.ReleaseDir or FuseOpcode.Init or FuseOpcode.Destroy => true,
        // fuse_write_in.flags (the file's open flags) at 32: an O_APPEND write lands at the end again.
        FuseOpcode.Write => frame.Length >= InHeader + 40 && (BinaryPrimitives.ReadUInt32LittleEndian(frame[(InHeader + 32)..]) & OAppend) == 0,
        // fuse_open_in.flags at 0: a truncating open would truncate what was written since.
        FuseOpcode.Open => frame.Length >= InHeader + 8 && (BinaryPrimitives.ReadUInt32LittleEndian(frame[InHeader..]) & (OTrunc | OCreat)) == 0,
        _ => false,
    };

    public bool Submit(VirtqueueRequest request)
    {
        int q = request.Queue.Value;
        ref int busy = ref _submitting[q * BusyStride];
        // The guest made this head available again, so whatever request the arrays hold for it has ended; it must not
        // stand for this request (which may be the same reused object) while it waits for a new daemon, or a catch-up
        // would take it for a frame the old daemon got and send it, or answer it, before this call does.
        int reused = (ushort)request.Tag;
        if (reused < _pending[q].Length) _pending[q][reused] = null;
        while (true)
        {
            var generation = _current;
            if (_failedFor is not null) return false;
            if (generation.Dead)
            {
                // A daemon a planned restart drained may end before its successor serves: wait for that one.
                if (!(generation.HandedOver ? AwaitHandover(q, generation, request.Cancellation) : AwaitRecovery(request.Cancellation))) return false;
                continue;
            }
            if (_queueGeneration[q] != generation && !CatchUp(q, generation)) continue;
            // Announced before Draining is read: a planned restart sets Draining, then waits (after a process-wide
            // barrier) until no worker is announced, so either this worker sees Draining or the restart sees it busy.
            Volatile.Write(ref busy, 1);
            if (generation.Draining)
            {
                Volatile.Write(ref busy, 0);
                if (!AwaitHandover(q, generation, request.Cancellation)) return false;
                continue;
            }
            bool sent;
            try
            {
                sent = SubmitTo(generation, request, q);
            }
            finally
            {
                Volatile.Write(ref busy, 0);
            }
            if (sent) return true;
            if (request.Cancellation.IsCancellationRequested) return false;
            // The transport fails the moment any of its threads sees the daemon gone, and only then reports it to
            // DaemonEnded, which marks the generation dead under the lock: a frame refused in between waits for that
            // mark (and then for the relaunch) like any other, rather than being answered EIO. The mark is a lock away, but
            // a loaded host can keep the reporting thread off a CPU for long: the wait is bounded as the relaunch's is, and
            // ends early if the generation stops being current (another thread switched) or the transport is disposed.
            if (!generation.Dead && generation.Transport.HasFailed) AwaitDeathMark(generation);
            // Not in the ring: a frame the daemon never saw goes to the next one, whatever its opcode.
            if (!generation.Dead) return false;
        }
    }

    /// <summary>
    /// Waits until <paramref name="generation"/>, whose ring transport has failed, is marked dead by the thread that
    /// failed it; bounded by the relaunch wait, and ended early when it stops being current or the transport is
    /// disposed. Returns whether it is marked dead.
    /// </summary>
    private bool AwaitDeathMark(Generation generation)
    {
        SpinWait.SpinUntil(() => generation.Dead || generation != _current || _disposed, _wait);
        return generation.Dead;
    }

    private bool SubmitTo(Generation generation, VirtqueueRequest request, int q)
    {
        int head = (ushort)request.Tag;
        bool tracked = request.ExpectsReply && head < _pending[q].Length;
        if (tracked)
        {
            _pending[q][head] = request;
            _pendingTag[q][head] = request.Tag;
            _sentIn[q][head] = 0;
        }
        if (generation.Transport.Submit(request))
        {
            if (tracked) _sentIn[q][head] = generation.Number;
            return true;
        }
        if (tracked) _pending[q][head] = null;
        return false;
    }

    /// <summary>
    /// On queue <paramref name="q"/>'s worker while a planned restart drains <paramref name="generation"/>: returns the
    /// replies the daemon still sends for this queue (the restart waits for them) until its successor serves. False when
    /// that took longer than the relaunch wait or the queue stops (the request is answered EIO).
    /// </summary>
    private bool AwaitHandover(int q, Generation generation, CancellationToken ct)
    {
        var queue = new QueueIndex((ushort)q);
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        while (_current == generation && generation.Draining && (!generation.Dead || generation.HandedOver))
        {
            generation.Transport.Poll(queue);
            var handover = _handover;
            try
            {
                if (handover is not null && handover.Wait(1, ct)) break;
                if (handover is null) ct.WaitHandle.WaitOne(1);
            }
            catch (OperationCanceledException)
            {
                return false;
            }
            if (ct.IsCancellationRequested) return false;
            if (System.Diagnostics.Stopwatch.GetElapsedTime(start) > _wait)
            {
                LogWaitedTooLong(_log, _wait.TotalSeconds);
                return false;
            }
        }
        return true;
    }

    /// <summary>
    /// A planned restart (vdev/README.md, "Planned restart"): stops sending frames to the serving daemon, waits until it
    /// has answered every frame it was sent and the answers reached the guest (up to <paramref name="drainTimeout"/>),
    /// then calls <paramref name="takeOver"/> (the standby daemon on <paramref name="rings"/> takes the session over)
    /// and makes that daemon the serving one. Requests that arrive meanwhile wait, and go to the new daemon: none is
    /// sent twice, none fails. Returns null and the guest's stall (nanoseconds, from the last frame the old daemon got to
    /// the switch) when the new daemon serves; otherwise why not (the old daemon then keeps serving, or it ended and is
    /// relaunched as after a crash).
    /// </summary>
    public async Task<(string? Error, long StallNs)> HandOverAsync(ShmRingSet rings, Action takeOver, TimeSpan drainTimeout)
    {
        ArgumentNullException.ThrowIfNull(takeOver);
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Generation old;
        lock (_lock)
        {
            old = _current;
            if (_disposed || _failedFor is not null || old.Dead || _handover is not null)
                return ("the daemon is not serving now (it ended, or another restart is under way)", 0);
            _handover = done.Task;
            old.Draining = true;
        }
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        try
        {
            // Pairs with the worker's announcement in Submit (a store, then a load of Draining): after this barrier, a
            // worker that did not see Draining shows as busy.
            Interlocked.MemoryBarrierProcessWide();
            bool drained = await Task.Run(() => AwaitDrained(old, drainTimeout)).ConfigureAwait(false);
            lock (_lock)
            {
                if (old.Dead) return ("the daemon ended during the restart; a new one is started as after a crash", 0);
                if (!drained)
                {
                    old.Draining = false;
                    return (string.Create(System.Globalization.CultureInfo.InvariantCulture,
                        $"the daemon still had requests in flight after {drainTimeout.TotalSeconds:F0} s (a lock wait?); it keeps serving, try again later"), 0);
                }
                old.HandedOver = true;
            }
            // The old daemon answered everything: its ring is closed before the new one takes over, so that it stops at
            // once and closes its descriptor channel, which the new daemon's adoption of the kept descriptors waits for.
            old.Rings.Close();
            takeOver();
            bool release;
            lock (_memoryLock)
            {
                var next = NewGeneration(rings);
                HandLatestMemory(next);
                lock (_lock)
                {
                    _current = next;
                    old.Dead = true;
                    release = TakeForRelease(old);
                }
            }
            long stall = (long)(System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMilliseconds * 1_000_000);
            Libc.EventFdSignal(_newGeneration);
            if (release) _relauncher.ReleaseRings(old.Rings);
            return (null, stall);
        }
        finally
        {
            lock (_lock) _handover = null;
            done.TrySetResult();
        }
    }

    /// <summary>
    /// Waits until no queue sends to <paramref name="old"/> and it has answered every frame (hiprio's without waiting for
    /// the empty completions of its FORGETs, which its worker may hold unreleased while it sleeps on its kick:
    /// <see cref="ShmRingTransport.Answered"/>), or it ended; false on timeout.
    /// </summary>
    private bool AwaitDrained(Generation old, TimeSpan timeout)
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        int spins = 0;
        while (!old.Dead)
        {
            bool drained = true;
            for (int q = 0; q < _queueGeneration.Length && drained; q++)
                drained = Volatile.Read(ref _submitting[q * BusyStride]) == 0 && old.Transport.Answered(q);
            if (drained) return true;
            if (System.Diagnostics.Stopwatch.GetElapsedTime(start) > timeout) return false;
            // The replies come from the old daemon's threads and the queues' workers, which need the CPUs: yield first,
            // then sleep.
            if (++spins < 100) Thread.Yield();
            else Thread.Sleep(1);
        }
        return true;
    }

    /// <summary>Hands the device's latest memory table to <paramref name="next"/> (the memory lock is held), before any request reaches it.</summary>
    private void HandLatestMemory(Generation next)
    {
        var memory = _latestMemory;
        if (memory is not null && memory.TryAddRef())
        {
            try
            {
                ((IGuestMemoryTransport)next.Transport).MemoryReplaced(memory);
            }
            finally
            {
                memory.Release();
            }
        }
    }

    // The queue's own generation: its frames went there, and only a generation some queue uses is kept.
    public void Flush(QueueIndex queue) => _queueGeneration[queue.Value]?.Transport.Flush(queue);

    public int Poll(QueueIndex queue)
    {
        var generation = _current;
        if (!generation.Dead && _queueGeneration[queue.Value] != generation && !CatchUp(queue.Value, generation)) return 0;
        return _queueGeneration[queue.Value]?.Transport.Poll(queue) ?? 0;
    }

    public bool ArmWakeup(QueueIndex queue, out int replyFd, out int peerExitFd)
    {
        int q = queue.Value;
        var generation = _current;
        // The ring transport fails the moment any thread sees the daemon gone (another queue's worker woken by the same
        // exit, say), and that thread marks the generation dead right after, under the lock. A worker arming in between
        // would get nothing to wait for from the failed transport and sleep on its kick alone, through the relaunch,
        // while the guest waits for the replies the relaunch sends again: it waits for the mark (bounded as Submit's
        // wait is) and then sleeps on the relaunch. A drained generation's ring is closed by the restart itself, which
        // switches to its successor at once and owes no reply.
        if (!generation.Dead && !generation.HandedOver && generation.Transport.HasFailed)
        {
            if (!AwaitDeathMark(generation))
            {
                // Replaced meanwhile, or disposed: the caller polls again instead of sleeping.
                replyFd = peerExitFd = -1;
                return false;
            }
        }
        if (_failedFor is null && generation.Dead)
        {
            // Waiting for the new daemon: the worker sleeps on its kick and on the end of the relaunch.
            _armed[q] = null;
            replyFd = _recovered.Value;
            peerExitFd = -1;
            return true;
        }
        if (_queueGeneration[q] != generation)
        {
            replyFd = peerExitFd = -1;
            return false;
        }
        bool armed = generation.Transport.ArmWakeup(queue, out replyFd, out peerExitFd);
        _armed[q] = replyFd >= 0 ? generation : null;
        return armed;
    }

    public void DisarmWakeup(QueueIndex queue, bool replyRang, bool peerExited)
    {
        var armed = _armed[queue.Value];
        _armed[queue.Value] = null;
        armed?.Transport.DisarmWakeup(queue, replyRang, peerExited);
    }

    /// <summary>
    /// On queue <paramref name="q"/>'s worker, once per new daemon: returns what the old daemon answered, then sends its
    /// unanswered chains to the new one or answers them (see the class remarks).
    /// </summary>
    private bool CatchUp(int q, Generation generation)
    {
        lock (_lock)
        {
            // A generation read from _current just before it was replaced and handed back: the caller reads again.
            if (generation.Released) return false;
            generation.Users++;
        }
        var old = _queueGeneration[q];
        _queueGeneration[q] = generation;
        if (old is null) return true;
        old.Transport.Poll(new QueueIndex((ushort)q));
        var pending = _pending[q];
        Span<byte> start = stackalloc byte[InHeader + 40];
        Span<byte> error = stackalloc byte[16];
        int resent = 0, failed = 0;
        for (int head = 0; head < pending.Length; head++)
        {
            var request = pending[head];
            if (request is null) continue;
            if (Volatile.Read(ref request.State) != 1 || request.Tag != _pendingTag[q][head])
            {
                pending[head] = null;
                continue;
            }
            bool committed = _sentIn[q][head] != 0;
            int n = request.CopyFrameStart(start);
            if (!committed || Replayable((FuseOpcode)request.Opcode, start[..n]))
            {
                _sentIn[q][head] = 0;
                if (generation.Transport.Submit(request))
                {
                    _sentIn[q][head] = generation.Number;
                    resent++;
                    continue;
                }
                // The new daemon is gone already: the next catch-up decides again.
                if (generation.Dead) continue;
            }
            pending[head] = null;
            BinaryPrimitives.WriteUInt32LittleEndian(error, 16);
            BinaryPrimitives.WriteInt32LittleEndian(error[4..], -Libc.EIO);
            BinaryPrimitives.WriteUInt64LittleEndian(error[8..], request.Unique);
            if (_device.Complete(request.Tag, error)) failed++;
        }
        generation.Transport.Flush(new QueueIndex((ushort)q));
        if (resent + failed > 0) LogCaughtUp(_log, q, resent, failed);
        bool release;
        lock (_lock)
        {
            old.Users--;
            release = TakeForRelease(old);
        }
        if (release) _relauncher.ReleaseRings(old.Rings);
        return true;
    }

    /// <summary>
    /// Whether <paramref name="generation"/> is to be handed back now (the lock is held): replaced, and no queue uses it.
    /// Marks it released, so that it happens once.
    /// </summary>
    private bool TakeForRelease(Generation generation)
    {
        if (generation.Users > 0 || generation == _current || !generation.Dead || generation.Released) return false;
        generation.Released = true;
        return true;
    }

    /// <summary>
    /// Waits (bounded) for the relaunch under way; true once a new daemon serves. False when it failed for good (the
    /// device then fails every request, as without relaunch) or the wait ran out (this request is answered EIO).
    /// </summary>
    private bool AwaitRecovery(CancellationToken ct)
    {
        var recovery = _recovery;
        if (recovery is null) return !_current.Dead;
        try
        {
            if (!recovery.Wait(_wait, ct))
            {
                LogWaitedTooLong(_log, _wait.TotalSeconds);
                return false;
            }
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        return recovery.Result;
    }

    void IGuestMemoryTransport.MemoryReplaced(Virtio.GuestMemoryTable table)
    {
        lock (_memoryLock)
        {
            _latestMemory = table;
            var generation = _current;
            // A dead daemon's successor gets the table when it is started (RelaunchAsync).
            if (!generation.Dead) ((IGuestMemoryTransport)generation.Transport).MemoryReplaced(table);
        }
    }

    /// <summary>The daemon of <paramref name="generation"/> ended (its ring failed, or its pidfd became readable).</summary>
    private void DaemonEnded(Generation generation, string reason)
    {
        lock (_lock)
        {
            if (generation != _current || generation.Dead || _disposed) return;
            // Drained by a planned restart: its end is the restart's, not a crash.
            if (generation.HandedOver)
            {
                generation.Dead = true;
                return;
            }
            if (_failedFor is not null)
            {
                generation.Dead = true;
                return;
            }
            var noticed = System.Diagnostics.Stopwatch.GetTimestamp();
            // Quiet the bell first: a worker that sees the daemon dead sleeps on it until the relaunch rings it (which
            // happens under the same lock, so a ring meant for the daemon before cannot be drained by mistake).
            Libc.EventFdDrain(_recovered);
            // The relaunch is published before the generation is marked dead: a worker that sees the mark waits for this
            // relaunch (AwaitRecovery), never for none (the first crash) or for the one before, already ended.
            var relaunch = new Task<Task<bool>>(() => RelaunchAsync(generation, reason, noticed));
            _recovery = relaunch.Unwrap();
            generation.Dead = true;
            LogDaemonEnded(_log, _info.Tag, reason);
            relaunch.Start(TaskScheduler.Default);
        }
    }

    private async Task<bool> RelaunchAsync(Generation dead, string reason, long noticed)
    {
        ShmRingSet? rings;
        try
        {
            rings = await _relauncher.RelaunchAsync(dead.Rings, reason, noticed).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // The relaunch boundary: whatever went wrong, the share falls back to failing requests.
        catch (Exception e)
#pragma warning restore CA1031
        {
            LogRelaunchFailed(_log, _info.Tag, e.Message);
            rings = null;
        }
        if (_disposed) return false;
        if (rings is null)
        {
            _failedFor = reason;
            _device.TransportFailed(reason);
            Libc.EventFdSignal(_recovered);
            return false;
        }
        bool release;
        lock (_memoryLock)
        {
            var next = NewGeneration(rings);
            // Before any request reaches the new daemon: until it acknowledged the table, requests take the copy path.
            HandLatestMemory(next);
            lock (_lock)
            {
                _current = next;
                // Every worker sleeping on the relaunch wakes, catches up and sleeps on the new ring.
                Libc.EventFdSignal(_recovered);
                release = TakeForRelease(dead);
            }
        }
        Libc.EventFdSignal(_newGeneration);
        if (release) _relauncher.ReleaseRings(dead.Rings);
        return true;
    }

    /// <summary>Watches the serving daemon's pidfd, so that its end is noticed at once, with or without requests.</summary>
    private void Watch()
    {
        while (!_disposed)
        {
            var generation = _current;
            int exitFd;
            try
            {
                exitFd = generation.Dead ? -1 : generation.Rings.PeerExitFd;
            }
            catch (ObjectDisposedException)
            {
                // Handed back between reading _current and its pidfd: it was replaced, read _current again.
                if (_disposed) return;
                continue;
            }
            catch (SyscallException)
            {
                // No pidfd for the daemon's pid: it is gone already.
                DaemonEnded(generation, "the daemon process exited");
                continue;
            }
            if (exitFd < 0 && !generation.Dead)
            {
                DaemonEnded(generation, "the daemon process exited");
                continue;
            }
            int ready;
            try
            {
                ready = Libc.WaitAny(_stop, _newGeneration, exitFd, -1);
            }
            catch (SyscallException)
            {
                return;
            }
            if ((ready & 1) != 0) return;
            if ((ready & 2) != 0) Libc.EventFdDrain(_newGeneration);
            if ((ready & 4) != 0) DaemonEnded(generation, "the daemon process exited");
        }
    }

    public void Dispose()
    {
        _disposed = true;
        _relauncher.TransportChanged(null);
        Libc.EventFdSignal(_stop);
        _watcher.Join(TimeSpan.FromSeconds(2));
        _current.Transport.Dispose();
        // The device stopped its workers before disposing the transport: nobody polls these any more.
        _stop.Dispose();
        _newGeneration.Dispose();
        _recovered.Dispose();
    }

    [LoggerMessage(EventId = 80, Level = LogLevel.Warning, Message = "share '{Tag}': {Reason}; requests wait for a new daemon")]
    private static partial void LogDaemonEnded(ILogger log, string tag, string reason);

    [LoggerMessage(EventId = 81, Level = LogLevel.Information, Message = "queue {Queue}: {Resent} requests sent to the new daemon, {Failed} answered EIO (in flight at the crash, not safe to repeat)")]
    private static partial void LogCaughtUp(ILogger log, int queue, int resent, int failed);

    [LoggerMessage(EventId = 82, Level = LogLevel.Warning, Message = "A request waited {Seconds} s for the new daemon; answered EIO")]
    private static partial void LogWaitedTooLong(ILogger log, double seconds);

    [LoggerMessage(EventId = 83, Level = LogLevel.Error, Message = "share '{Tag}': starting a new daemon failed: {Reason}")]
    private static partial void LogRelaunchFailed(ILogger log, string tag, string reason);
}
