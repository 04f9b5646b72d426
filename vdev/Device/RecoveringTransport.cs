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
        // The queue's request objects are one per head and reused, and their entries here are cleared only by a
        // catch-up: an entry left by this head's previous request is this very object, in flight again with the same
        // tag. Left there, the catch-up below would take it for a chain the old daemon had, and settle it (send it
        // again, or answer EIO) on top of the submission that follows.
        if ((ushort)request.Tag < _pending[q].Length && _pending[q][(ushort)request.Tag] == request) _pending[q][(ushort)request.Tag] = null;
        while (true)
        {
            var generation = _current;
            if (_failedFor is not null) return false;
            if (generation.Dead)
            {
                if (!AwaitRecovery(request.Cancellation)) return false;
                continue;
            }
            if (_queueGeneration[q] != generation && !CatchUp(q, generation)) continue;
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
            // Not in the ring: a frame the daemon never saw goes to the next one, whatever its opcode.
            if (request.Cancellation.IsCancellationRequested || !generation.Dead) return false;
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
            if (_failedFor is not null)
            {
                generation.Dead = true;
                return;
            }
            var noticed = System.Diagnostics.Stopwatch.GetTimestamp();
            // Quiet the bell first: a worker that sees the daemon dead sleeps on it until the relaunch rings it (which
            // happens under the same lock, so a ring meant for the daemon before cannot be drained by mistake).
            Libc.EventFdDrain(_recovered);
            generation.Dead = true;
            LogDaemonEnded(_log, _info.Tag, reason);
            _recovery = Task.Run(() => RelaunchAsync(generation, reason, noticed));
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
