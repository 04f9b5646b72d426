using System.Buffers;
using System.Buffers.Binary;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Protocol.Fuse;
using Hypervisor.Protocol.Ring;
using Hypervisor.Protocol.Share;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough.Transport;

/// <summary>
/// Serves the shared-memory ring the vdev created: one dispatcher thread per request queue peeks request frames
/// and runs the engine on them with the reply written straight into the completion ring, or, with
/// <c>--thread-pool-size</c>, hands them to a pool of worker threads. Requests that may block
/// on the disk for long (syncs) are copied out and run on the thread pool so they never hold up the queue. A SETLKW
/// that has to wait is answered later by the engine's lock waiter (<see cref="IDeferredReplySink"/>): a guest waiting
/// for a lock must not keep the unlock behind it from being served, nor hold a thread.
/// Contract with the vdev: every submission gets exactly one completion with the submission's tag; an empty
/// completion means the request has no reply (FORGET) or could not be answered (a frame too broken to address). On
/// queue 0 (hiprio) the empty completion of a frame tagged <see cref="RingFrame.NoReplyTag"/> is committed but not
/// announced (<see cref="Announces"/>). Queue 0's frames are all run on its dispatcher, no pool and no offload, and
/// each is released only once the engine has run it (and, for one answered at once, its completion is committed):
/// the vdev's planned restart relies on that to know queue 0 answered without waiting for completions it ignores
/// (protocol/Ring/README.md, "Frames that get no reply").
/// </summary>
public sealed partial class RingTransport : IDisposable, IDeferredReplySink
{
    private readonly FuseEngine _engine;
    private readonly ILogger _log;
    private readonly ShmRingSet _rings;
    private readonly Thread[] _dispatchers;
    private readonly object[] _completionLocks;
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource<RingStatus> _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _running;
    private bool _unmapped;
    private readonly int[] _requestQueueCpus;
    private readonly System.Collections.Concurrent.BlockingCollection<PoolWork>? _work;
    private readonly Thread[] _pool = [];
    private byte[] _peerMask = [];
    private readonly GuestMemoryMap? _memory;
    // Called when a queue has run dry (the descriptor store's flush: passthrough/FileSystem/KeptDescriptors.cs); null
    // without one.
    private readonly Action? _queueIdle;

    private RingTransport(FuseEngine engine, ILogger log, ShmRingSet rings, int poolSize, Action? queueIdle)
    {
        _queueIdle = queueIdle;
        if (poolSize > 0)
        {
            _work = new System.Collections.Concurrent.BlockingCollection<PoolWork>(new System.Collections.Concurrent.ConcurrentQueue<PoolWork>());
            _pool = new Thread[poolSize];
            for (var i = 0; i < poolSize; i++) _pool[i] = new Thread(Work) { IsBackground = true, Name = $"ring-pool-{i}" };
        }
        _engine = engine;
        _log = log;
        _rings = rings;
        _memory = GuestMemoryMap.Start(rings.GuestMemoryChannel, log);
        _dispatchers = new Thread[rings.QueueCount];
        _requestQueueCpus = new int[rings.QueueCount - 1];
        Array.Fill(_requestQueueCpus, -1);
        _completionLocks = new object[rings.QueueCount];
        for (var i = 0; i < _completionLocks.Length; i++) _completionLocks[i] = new object();
    }

    /// <summary>The CPU each request queue's dispatcher pinned itself to, request queue 1 first; -1 where it is not pinned.</summary>
    public IReadOnlyList<int> RequestQueueCpus => _requestQueueCpus;

    /// <summary>Completes when serving ended: the vdev closed the ring (Closed), died (PeerDead), or it broke.</summary>
    public Task<RingStatus> Completion => _ended.Task;

    /// <summary>The share of time a request queue's dispatcher may spin when there are at least as many as CPUs.</summary>
    public const int CrowdedSpinCpuShare = 4;

    /// <summary>
    /// Attaches to the ring described by <paramref name="descriptor"/> and starts serving every queue; with
    /// <paramref name="queueCpus"/>, each request queue's dispatcher runs on its CPU alone (the vdev pins the worker
    /// at the other end of the queue to the same CPU). With a <paramref name="poolSize"/> above 0 (<c>--thread-pool-size</c>,
    /// as virtiofsd's), the dispatchers hand every request to that many worker threads, shared by the request queues,
    /// which answer in whatever order they finish; with 0 each queue's dispatcher runs its requests itself.
    /// <paramref name="queueIdle"/>, when given, runs whenever a queue has run dry, after its replies were announced
    /// (and on a pool worker that found no more work), on the thread that served the queue.
    /// </summary>
    public static RingTransport Start(FuseEngine engine, ILogger log, string descriptor, QueueCpus? queueCpus = null, int poolSize = 0, Action? queueIdle = null)
    {
        ShmRingSet rings;
        try
        {
            rings = ShmRingSet.Attach(descriptor);
        }
        catch (Exception e) when (e is FormatException or ArgumentException or InvalidDataException or IOException)
        {
            throw new TransportException($"Cannot attach to the shared-memory ring '{descriptor}': {e.Message}");
        }
        if (rings.MaxFrameSize < FuseEngine.MaxReplySize)
        {
            rings.Dispose();
            throw new TransportException($"The shared-memory ring carries frames of at most {rings.MaxFrameSize} bytes; the daemon needs {FuseEngine.MaxReplySize} (1 MiB writes plus headers).");
        }
        if (queueCpus?.Check(rings.QueueCount - 1, "--queue-cpus") is { } misfit)
        {
            rings.Dispose();
            throw new TransportException(misfit);
        }
        var transport = new RingTransport(engine, log, rings, poolSize, queueIdle);
        // The vdev's affinity, as this process inherited it through fuse_launcher: inside a pid namespace of its own
        // the daemon cannot name the vdev to ask.
        transport._peerMask = SpinPolicy.CurrentThreadMask();
        foreach (var worker in transport._pool) worker.Start();
        transport._running = rings.QueueCount;
        using var placed = new CountdownEvent(rings.QueueCount);
        // As many spinning request dispatchers as CPUs: each may spin a quarter of the time at most, or a dispatcher
        // that never sleeps keeps a CPU to itself while the vdev's workers crowd onto the others.
        bool crowded = rings.QueueCount - 1 >= Environment.ProcessorCount;
        for (var q = 0; q < rings.QueueCount; q++)
        {
            var queue = rings.GetQueue(q);
            // Whether it spins at all is decided by its dispatcher, once placed.
            if (crowded) queue.Consumer.SpinCpuShare = CrowdedSpinCpuShare;
            int cpu = q == 0 || queueCpus is null ? -1 : queueCpus.CpuOf(q);
            var thread = new Thread(() => transport.Dispatch(queue, cpu, placed)) { IsBackground = true, Name = $"ring-q{q}" };
            transport._dispatchers[q] = thread;
            thread.Start();
        }
        // Every dispatcher has been placed (and its CPU published for status) before the daemon can report ready.
        placed.Wait();
        return transport;
    }

    private void Dispatch(RingQueue queue, int cpu, CountdownEvent placed)
    {
        // A CPU that cannot be had (offline, or no longer in the cpuset) leaves the queue served where the scheduler
        // puts it: slower perhaps, but serving.
        try
        {
            if (cpu >= 0)
            {
                if (QueueCpus.TryPinCurrentThread(cpu, out int errno)) Volatile.Write(ref _requestQueueCpus[queue.Index - 1], cpu);
                else LogNotPinned(queue.Index, cpu, errno);
            }
        }
        finally
        {
            placed.Signal();
        }
        // Queue 0 is virtio-fs's hiprio queue (FORGET, INTERRUPT): no reply waits on it, so it sleeps at once. A request
        // queue spins for the next request, and announces replies before its batch ends, only when the vdev's worker at
        // the other end can run at the same time on another CPU: when both share one CPU, spinning holds up the very
        // thread that would submit, and a doorbell mid-batch costs two context switches that buy nothing.
        bool beside = queue.Index != 0 && SpinPolicy.CurrentThreadCanSpinFor(0, cpu, _peerMask);
        queue.Consumer.SpinsBeforeSleep = beside;
        // The same for a reply waiting for room in the completion ring: only the vdev's worker makes it.
        queue.Producer.SpinsBeforeSleep = beside;
        var final = RingStatus.Closed;
        var unannounced = new Unannounced { EarlyAnnouncements = beside };
        // This dispatcher's buffers for a payload in guest memory, and its scratch for a reply built there, made once.
        var buffers = _memory is null ? [] : new IoBuffer[GuestMemoryFrame.MaxRanges];
        var scratch = _memory is null ? [] : new byte[GuestPayload.ScratchSize];
        try
        {
            while (true)
            {
                var status = queue.Consumer.TryPeek(out var frame);
                if (status == RingStatus.WouldBlock)
                {
                    // Idle: wake the vdev for the replies of this batch, then wait for the next request.
                    unannounced.Flush(queue.Producer);
                    _queueIdle?.Invoke();
                    status = queue.Consumer.Peek(out frame, Timeout.InfiniteTimeSpan, _stop.Token);
                }
                if (status == RingStatus.InvalidFrame)
                {
                    // Well framed but not understood (flags or reserved fields of a later layout): answer it emptily.
                    var tag = frame.Tag;
                    queue.Consumer.Release();
                    if (!Complete(queue, tag, ReadOnlySpan<byte>.Empty)) return;
                    continue;
                }
                if (status != RingStatus.Ok)
                {
                    final = status;
                    if (status is RingStatus.Broken) LogBroken(queue.Index);
                    return;
                }

                if (frame.Flags == RingRecordFlags.GuestMemory)
                {
                    // Served here even with a thread pool: the frame is small, and its table is held only while it runs.
                    if (!HandleGuestMemory(queue, frame, buffers, scratch, ref unannounced)) return;
                    queue.Consumer.Release();
                    continue;
                }

                if (_work is not null && queue.Index != 0)
                {
                    // The ring's slot is released at once: the worker reads its own copy.
                    var copy = ArrayPool<byte>.Shared.Rent(frame.Data.Length);
                    frame.Data.CopyTo(copy);
                    var work = new PoolWork(queue, copy, frame.Data.Length, frame.Tag);
                    queue.Consumer.Release();
                    _work.Add(work);
                    continue;
                }

                // Not on queue 0, whose frames are all answered before they are released (see the class remarks); a guest
                // that sends a sync there waits for it on its own hiprio queue.
                if (queue.Index != 0 && MayBlock(frame.Data))
                {
                    var copy = ArrayPool<byte>.Shared.Rent(frame.Data.Length);
                    var length = frame.Data.Length;
                    frame.Data.CopyTo(copy);
                    var tag = frame.Tag;
                    queue.Consumer.Release();
                    ThreadPool.UnsafeQueueUserWorkItem(static s => s.Transport.RunOffloaded(s.Queue, s.Copy, s.Length, s.Tag),
                        new Offloaded(this, queue, copy, length, tag), preferLocal: false);
                    continue;
                }

                if (!HandleInPlace(queue, frame, ref unannounced)) return;
                queue.Consumer.Release();
            }
        }
        catch (ObjectDisposedException)
        {
        }
        finally
        {
            if (Interlocked.Decrement(ref _running) == 0) _ended.TrySetResult(final);
            else if (final is RingStatus.PeerDead or RingStatus.Broken) _ended.TrySetResult(final);
        }
    }

    private sealed record Offloaded(RingTransport Transport, RingQueue Queue, byte[] Copy, int Length, ulong Tag);

    private readonly record struct PoolWork(RingQueue Queue, byte[] Copy, int Length, ulong Tag);

    /// <summary>A worker of <c>--thread-pool-size</c>: runs requests the dispatchers copied out, each reply into its own buffer.</summary>
    private void Work()
    {
        var reply = new byte[FuseEngine.MaxReplySize];
        try
        {
            foreach (var work in _work!.GetConsumingEnumerable(_stop.Token))
            {
                try
                {
                    var length = _engine.Handle(work.Copy.AsSpan(0, work.Length), reply, this, new ReplyRoute(work.Queue.Index, work.Tag));
                    if (length != FuseEngine.Deferred && !Complete(work.Queue, work.Tag, reply.AsSpan(0, length))) return;
                    if (_work.Count == 0) _queueIdle?.Invoke();
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(work.Copy);
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
    }

    /// <summary>
    /// Replies committed but not yet announced to a sleeping vdev. A batch of requests is answered with one
    /// doorbell when the queue runs dry, instead of one per reply: every doorbell that wakes the vdev mid-batch
    /// costs it a wake-up. When the vdev can run beside the dispatcher (<see cref="EarlyAnnouncements"/>), a long
    /// batch is still announced every <see cref="MaxReplies"/> replies or <see cref="MaxBytes"/> bytes, so that the
    /// vdev returns the first replies to the guest while the daemon works on the rest; when both share one CPU the
    /// vdev could only run instead of the dispatcher, so the batch is announced once, at its end.
    /// </summary>
    private struct Unannounced
    {
        private const int MaxReplies = 8;
        private const int MaxBytes = 64 * 1024;
        private int _replies;
        private int _bytes;

        /// <summary>Whether a long batch is announced before it ends.</summary>
        public bool EarlyAnnouncements;

        public void Add(RingProducer producer, int length)
        {
            _replies++;
            _bytes += length;
            if (EarlyAnnouncements && (_replies >= MaxReplies || _bytes >= MaxBytes)) Flush(producer);
        }

        public void Flush(RingProducer producer)
        {
            if (_replies == 0) return;
            _replies = _bytes = 0;
            producer.Flush();
        }
    }

    /// <summary>Runs the engine with the reply written directly into the completion ring (no intermediate copy).</summary>
    private bool HandleInPlace(RingQueue queue, in RingFrame frame, ref Unannounced unannounced)
    {
        lock (_completionLocks[queue.Index])
        {
            var status = queue.Producer.Reserve(FuseEngine.MaxReplySize, out var reply, Timeout.InfiniteTimeSpan, _stop.Token);
            if (status != RingStatus.Ok) return Stopped(queue, status);
            var length = _engine.Handle(frame.Data, reply, this, new ReplyRoute(queue.Index, frame.Tag));
            if (length == FuseEngine.Deferred)
            {
                queue.Producer.CancelReservation();
                return true;
            }
            queue.Producer.Commit(length, frame.Tag, notify: false);
            if (Announces(queue.Index, frame.Tag, length)) unannounced.Add(queue.Producer, length);
            return true;
        }
    }

    /// <summary>
    /// Whether a completion of <paramref name="length"/> bytes with <paramref name="tag"/> on <paramref name="queue"/>
    /// wakes a vdev that sleeps on the completion ring: all do except an empty one of a frame the vdev sent with
    /// <see cref="RingFrame.NoReplyTag"/> on queue 0 (a FORGET), whose completion the vdev ignores. Waking the vdev's
    /// hiprio worker only to release it would cost a wake-up per FORGET batch; the worker releases it at its next
    /// wake-up. Request queues keep announcing every completion, whatever it is.
    /// </summary>
    internal static bool Announces(int queue, ulong tag, int length) => queue != 0 || length != 0 || tag != RingFrame.NoReplyTag;

    /// <summary>
    /// Serves a request whose payload stays in guest memory (READ, WRITE, and the listings, attribute values and link
    /// targets built into it; <paramref name="scratch"/> is this dispatcher's, for one built over several ranges): the frame's table and ranges are checked against
    /// this process's own mappings before the engine moves a byte. A frame naming a table that is not mapped here, or a
    /// range outside it, is invalid: the request is answered EIO and the queue keeps being served.
    /// </summary>
    private bool HandleGuestMemory(RingQueue queue, in RingFrame frame, IoBuffer[] buffers, byte[] scratch, ref Unannounced unannounced)
    {
        GuestMemoryMap.Table? table = null;
        try
        {
            lock (_completionLocks[queue.Index])
            {
                var status = queue.Producer.Reserve(GuestPayloadReplySize, out var reply, Timeout.InfiniteTimeSpan, _stop.Token);
                if (status != RingStatus.Ok) return Stopped(queue, status);
                int length;
                if (!GuestMemoryFrame.TryParse(frame.Data, out var generation, out var direction, out var ranges, out var fuse)
                    || _memory is null || (table = _memory.Acquire(generation)) is null
                    || !GuestMemoryMap.TryResolve(table, ranges, buffers, out int count, out long total))
                {
                    LogInvalidGuestMemoryFrame(queue.Index, frame.Data.Length);
                    length = InvalidFrameReply(frame.Data, reply);
                }
                else
                {
                    length = _engine.Handle(fuse, reply, this, new ReplyRoute(queue.Index, frame.Tag), new GuestPayload(buffers.AsSpan(0, count), total, direction, scratch));
                }
                queue.Producer.Commit(length, frame.Tag, notify: false);
                // Counted as the small reply it is, not by the data moved: a burst of large reads or writes then wakes
                // the vdev once per MaxReplies, which is what such a burst costs the vdev most of.
                if (Announces(queue.Index, frame.Tag, length)) unannounced.Add(queue.Producer, length);
                return true;
            }
        }
        finally
        {
            if (table is not null) _memory!.Release(table);
        }
    }

    /// <summary>
    /// Room reserved for the reply to a frame whose payload is in guest memory: its reply is an out header (READ, a
    /// reply built into guest memory, any error), an out header and fuse_write_out (WRITE) or fuse_getxattr_out (a size
    /// query), so the completion ring need not have a whole frame free.
    /// </summary>
    private const int GuestPayloadReplySize = 64;

    /// <summary>EIO for the request in a guest-memory frame that cannot be served, when its FUSE header can be found; else no reply (an empty completion).</summary>
    private static int InvalidFrameReply(ReadOnlySpan<byte> record, Span<byte> reply)
    {
        if (record.Length < GuestMemoryFrame.PrefixSize) return 0;
        int offset = GuestMemoryFrame.FrameOffset((int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(record[8..]), GuestMemoryFrame.MaxRanges));
        if (record.Length < offset + 16) return 0;
        ulong unique = BinaryPrimitives.ReadUInt64LittleEndian(record[(offset + 8)..]);
        return FuseReply.Error(reply, new RequestId(unique), Errno.EIO);
    }

    private void RunOffloaded(RingQueue queue, byte[] copy, int length, ulong tag)
    {
        var reply = ArrayPool<byte>.Shared.Rent(FuseEngine.MaxReplySize);
        try
        {
            var replyLength = _engine.Handle(copy.AsSpan(0, length), reply);
            Complete(queue, tag, reply.AsSpan(0, replyLength));
        }
        catch (ObjectDisposedException)
        {
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(copy);
            ArrayPool<byte>.Shared.Return(reply);
        }
    }

    /// <summary>Linux's virtio-fs driver never sends INTERRUPT, not even for a fatal signal (its hiprio queue carries FORGETs only).</summary>
    bool IDeferredReplySink.SendsInterrupts => false;

    /// <inheritdoc/>
    void IDeferredReplySink.SendDeferred(ReplyRoute route, ReadOnlySpan<byte> reply)
    {
        if (route.Queue <= 0 || route.Queue >= _completionLocks.Length) return;
        Complete(_rings.GetQueue(route.Queue), route.Tag, reply);
    }

    private bool Complete(RingQueue queue, ulong tag, ReadOnlySpan<byte> reply)
    {
        lock (_completionLocks[queue.Index])
        {
            // A late reply (a lock granted, a sync finished) after Dispose must not touch the unmapped ring.
            if (_unmapped) return false;
            var status = queue.Producer.Reserve(reply.Length, out var span, Timeout.InfiniteTimeSpan, _stop.Token);
            if (status != RingStatus.Ok) return Stopped(queue, status);
            reply.CopyTo(span);
            queue.Producer.Commit(reply.Length, tag, notify: Announces(queue.Index, tag, reply.Length));
            return true;
        }
    }

    private bool Stopped(RingQueue queue, RingStatus status)
    {
        if (status is RingStatus.Broken) LogBroken(queue.Index);
        _ended.TrySetResult(status);
        return false;
    }

    /// <summary>Requests that can wait on the disk for long: FSYNC, FSYNCDIR, SYNCFS.</summary>
    private static bool MayBlock(ReadOnlySpan<byte> frame)
    {
        if (frame.Length < 8) return false;
        var opcode = (FuseOpcode)BinaryPrimitives.ReadUInt32LittleEndian(frame[4..]);
        return opcode is FuseOpcode.FSync or FuseOpcode.FSyncDir or FuseOpcode.SyncFs;
    }

    /// <summary>Stops the dispatchers, closes the ring in an orderly way (the vdev sees Closed) and unmaps it.</summary>
    public void Dispose()
    {
        _stop.Cancel();
        foreach (var thread in _dispatchers) thread?.Join(TimeSpan.FromSeconds(2));
        foreach (var thread in _pool) thread.Join(TimeSpan.FromSeconds(2));
        foreach (var gate in _completionLocks)
        {
            lock (gate) _unmapped = true;
        }
        _rings.Dispose();
        _memory?.Dispose();
        _work?.Dispose();
        _stop.Dispose();
    }

    [LoggerMessage(EventId = 320, Level = LogLevel.Error, Message = "The shared-memory ring of queue {Queue} holds impossible indices or headers; the queue is no longer served")]
    private partial void LogBroken(int queue);

    [LoggerMessage(EventId = 322, Level = LogLevel.Warning, Message = "Queue {Queue}: a {Length}-byte frame with its payload in guest memory names a table or range this daemon has not mapped; answered EIO")]
    private partial void LogInvalidGuestMemoryFrame(int queue, int length);

    [LoggerMessage(EventId = 321, Level = LogLevel.Warning, Message = "Queue {Queue}'s dispatcher could not be placed on CPU {Cpu} (errno {Errno}); it runs where the scheduler puts it")]
    private partial void LogNotPinned(int queue, int cpu, int errno);
}
