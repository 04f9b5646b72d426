using System.Buffers.Binary;
using Hypervisor.Interop;
using Hypervisor.Protocol.Fuse;
using Hypervisor.Protocol.Ring;
using Hypervisor.Vdev.Virtio;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Vdev.Device;

/// <summary>
/// The transport to the passthrough daemon over the shared-memory ring set: ring queue <c>i</c> carries
/// virtqueue <c>i</c> (0 = hiprio, 1..N = request queues). Each ring has exactly one producer and one consumer, as
/// the ring requires: that virtqueue's worker thread, which submits frames and polls for their replies
/// (<see cref="IPolledFuseTransport"/>). Request frames are copied once, from guest memory straight into the
/// submission ring; replies are copied once, from the completion ring straight into guest memory. A burst of
/// frames wakes the daemon once (<see cref="Flush"/>) and a burst of replies raises one interrupt. The daemon
/// answers every submission, FORGET included, with a completion carrying its tag (empty for no reply); frames that
/// get no reply are submitted with <see cref="RingFrame.NoReplyTag"/>, whose completion the device ignores (and which
/// the daemon does not announce on queue 0: the worker takes it at its next wake-up).
/// The transport does not own the ring set; whoever created it (and started the daemon) disposes it.
/// When the ring set has a guest-memory channel, every memory table is handed to the daemon on it, and once the daemon
/// has mapped a table, the payload of a READ or WRITE of that table stays in guest memory: the frame lists the checked
/// guest addresses and the daemon moves the bytes itself with one preadv/pwritev; the reply payload of a READDIR,
/// READDIRPLUS, GETXATTR, LISTXATTR or READLINK is built by the daemon in those addresses the same way
/// (protocol/Ring/README.md).
/// </summary>
public sealed partial class ShmRingTransport : IPolledFuseTransport, IGuestMemoryTransport
{
    /// <summary>How long the control thread waits for the daemon to acknowledge a memory table before the table's requests go the copy path.</summary>
    private static readonly TimeSpan TableAckTimeout = TimeSpan.FromSeconds(2);

    /// <summary>Size of fuse_in_header + fuse_write_in: what a WRITE frame keeps when its data stays in guest memory.</summary>
    private static readonly int WriteFrameSize = VirtqueueRequest.InHeaderSize + System.Runtime.CompilerServices.Unsafe.SizeOf<WriteIn>();

    /// <summary>A READ frame longer than this carries more than header and read_in (a broken guest): it goes the copy path.</summary>
    private const int MaxReadFrame = 4096;

    /// <summary>
    /// How long a submission waits for space in a full ring before it returns the replies that arrived meanwhile:
    /// the daemon may be waiting for room in the completion ring, which only this thread makes.
    /// </summary>
    private static readonly TimeSpan FullRingPoll = TimeSpan.FromMilliseconds(1);

    private readonly ShmRingSet _rings;
    private readonly IFuseCompletionSink _sink;
    private readonly ILogger _log;
    private int _failed;
    private readonly object _channelLock = new();
    private readonly Action<ulong> _dropTable;
    // Per queue, at index queue * CounterStride (a cache line each, so that queues' workers do not share one): frames
    // committed to the submission ring and completions released from the completion ring. Each is written only by the
    // queue's worker; their difference is what the daemon still has to answer (every frame gets one completion). At
    // index queue * CounterStride + ExpectingReply, in the same line: the same counts of frames that expect a reply
    // and of the completions with their tags (queue 0's drain, Answered, needs them apart).
    private readonly long[] _committed;
    private readonly long[] _released;
    private const int CounterStride = 8;
    private const int ExpectingReply = 1;

    private ShmRingTransport(ShmRingSet rings, IFuseCompletionSink sink, ILogger log)
    {
        _committed = new long[rings.QueueCount * CounterStride];
        _released = new long[rings.QueueCount * CounterStride];
        _rings = rings;
        _sink = sink;
        _log = log;
        _dropTable = DropTable;
    }

    /// <summary>
    /// A factory for <see cref="VhostUser.VhostUserDevice.RunAsync"/> over <paramref name="rings"/>, which must
    /// have at least 1 + the device's request queues.
    /// </summary>
    public static IFuseTransportFactory Factory(ShmRingSet rings, ILogger log) => new RingFactory(rings, log);

    private sealed class RingFactory(ShmRingSet rings, ILogger log) : IFuseTransportFactory
    {
        public IFuseTransport Create(FuseDeviceInfo device, IFuseCompletionSink sink)
        {
            int queues = 1 + device.RequestQueues;
            if (rings.QueueCount < queues)
                throw new ArgumentException($"The shared-memory ring set has {rings.QueueCount} queues but the device needs {queues} (hiprio plus {device.RequestQueues} request queues); create it with ShmRingSet.Create({queues}).");
            return new ShmRingTransport(rings, sink, log);
        }
    }

    /// <summary>Whether this transport has failed (its daemon ended or its ring broke); set before the sink is told.</summary>
    public bool HasFailed => Volatile.Read(ref _failed) != 0;

    public bool Submit(VirtqueueRequest request)
    {
        if (Volatile.Read(ref _failed) != 0) return false;
        var queue = _rings.GetQueue(request.Queue.Value);
        var direct = DirectKind(request, this, out int ranges);
        int length = direct switch
        {
            Direct.Read => GuestMemoryFrame.Size(ranges, request.ReadableLength),
            Direct.Write => GuestMemoryFrame.Size(ranges, WriteFrameSize),
            _ => request.ReadableLength,
        };
        RingStatus status;
        try
        {
            // While the ring is full (backpressure on this virtqueue only), return the replies that arrive: this
            // thread is the only one that makes room in the completion ring. Returns at once when the daemon is
            // gone or the ring stops.
            Span<byte> frame;
            while ((status = queue.Producer.Reserve(length, out frame, FullRingPoll, request.Cancellation)) == RingStatus.Timeout)
                Poll(request.Queue);
            if (status == RingStatus.Ok && direct != Direct.None)
            {
                EncodeDirect(request, direct, ranges, frame);
                if (direct == Direct.Read) request.DirectReadCapacity = request.WritableLength - VirtqueueRequest.OutHeaderSize;
                queue.Producer.Commit(length, request.Tag, notify: false, RingRecordFlags.GuestMemory);
                Counted(request.Queue.Value, expectsReply: true);
                return true;
            }
            if (status == RingStatus.Ok)
            {
                // A request sent again after a daemon's crash may have gone the direct way to the dead daemon.
                request.DirectReadCapacity = 0;
                request.CopyFrameTo(frame);
                // The daemon is woken once per batch, by Flush.
                queue.Producer.Commit(length, request.ExpectsReply ? request.Tag : RingFrame.NoReplyTag, notify: false);
                Counted(request.Queue.Value, request.ExpectsReply);
                return true;
            }
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
        if (status == RingStatus.TooLarge) LogTooLarge(_log, request.Queue.Value, length, queue.Producer.MaxFrameSize);
        else if (status != RingStatus.Canceled) Fail(Reason(queue.Index, status, "submission"));
        return false;
    }

    /// <summary>Counts a frame committed on <paramref name="queue"/> (on its worker, after the commit).</summary>
    private void Counted(int queue, bool expectsReply)
    {
        int at = queue * CounterStride;
        if (expectsReply) Volatile.Write(ref _committed[at + ExpectingReply], _committed[at + ExpectingReply] + 1);
        Volatile.Write(ref _committed[at], _committed[at] + 1);
    }

    /// <summary>None: the copy path. Read: the daemon writes the reply's payload into the chain (READ and the replies it builds). Write: it reads a WRITE's data from the chain.</summary>
    private enum Direct { None, Read, Write }

    /// <summary>
    /// Whether <paramref name="request"/>'s payload can stay in guest memory: a READ, READDIR, READDIRPLUS, READLINK,
    /// GETXATTR or LISTXATTR (one that asks for the bytes) whose reply the daemon writes into the chain's buffers after
    /// the out header, or a WRITE, of a table the daemon behind <paramref name="transport"/> has mapped, with a payload of 1 to <see cref="GuestMemoryFrame.MaxRanges"/> segments. <paramref name="ranges"/>
    /// is the number of segments the payload occupies.
    /// </summary>
    private static Direct DirectKind(VirtqueueRequest request, ShmRingTransport transport, out int ranges)
    {
        ranges = 0;
        if (request.Memory is not { } table || !table.IsMappedBy(transport) || !request.ExpectsReply) return Direct.None;
        switch ((FuseOpcode)request.Opcode)
        {
            case FuseOpcode.Read or FuseOpcode.ReadDir or FuseOpcode.ReadDirPlus or FuseOpcode.ReadLink
                when request.ReadableLength <= MaxReadFrame && request.WritableLength > VirtqueueRequest.OutHeaderSize:
            case FuseOpcode.GetXAttr or FuseOpcode.ListXAttr
                when request.ReadableLength <= MaxReadFrame && request.WritableLength > VirtqueueRequest.OutHeaderSize && AsksForBytes(request):
                ranges = CountAfter(request.Writable, VirtqueueRequest.OutHeaderSize);
                return ranges <= GuestMemoryFrame.MaxRanges ? Direct.Read : Direct.None;
            case FuseOpcode.Write when request.ReadableLength > WriteFrameSize:
                ranges = CountAfter(request.Readable, WriteFrameSize);
                return ranges <= GuestMemoryFrame.MaxRanges ? Direct.Write : Direct.None;
            default:
                return Direct.None;
        }
    }

    /// <summary>
    /// Whether a GETXATTR or LISTXATTR asks for the bytes (fuse_getxattr_in.size above 0) rather than their size, whose
    /// reply is fuse_getxattr_out and goes the copy path. Read once from guest memory here; should the guest change it
    /// before the frame is copied, the daemon answers the size query it then sees with fuse_getxattr_out, which
    /// <see cref="Virtqueue.Complete"/> copies like any reply that is more than an out header.
    /// </summary>
    private static bool AsksForBytes(VirtqueueRequest request)
    {
        Span<byte> start = stackalloc byte[64];
        int n = request.CopyFrameStart(start[..(VirtqueueRequest.InHeaderSize + sizeof(uint))]);
        return n == VirtqueueRequest.InHeaderSize + sizeof(uint) && BinaryPrimitives.ReadUInt32LittleEndian(start[VirtqueueRequest.InHeaderSize..]) != 0;
    }

    /// <summary>Segments that hold bytes after the first <paramref name="skip"/> bytes of <paramref name="segments"/>.</summary>
    private static int CountAfter(ReadOnlySpan<GuestBuffer> segments, int skip)
    {
        int count = 0;
        foreach (ref readonly var seg in segments)
        {
            if (skip >= seg.Length) { skip -= seg.Length; continue; }
            skip = 0;
            count++;
        }
        return count;
    }

    /// <summary>Writes the guest-memory prefix, the payload's ranges and the FUSE frame without its payload.</summary>
    private static void EncodeDirect(VirtqueueRequest request, Direct direct, int ranges, Span<byte> record)
    {
        var table = request.Memory!;
        bool read = direct == Direct.Read;
        GuestMemoryFrame.WritePrefix(record, table.Generation, ranges, read ? GuestMemoryDirection.ToGuest : GuestMemoryDirection.FromGuest);
        int skip = read ? VirtqueueRequest.OutHeaderSize : WriteFrameSize, index = 0;
        // Every segment was checked against this table when the chain was walked, and lies inside one region.
        foreach (ref readonly var seg in read ? request.Writable : request.Readable)
        {
            if (skip >= seg.Length) { skip -= seg.Length; continue; }
            GuestMemoryFrame.WriteRange(record, index++, seg.GuestAddress + (ulong)skip, (ulong)(seg.Length - skip));
            skip = 0;
        }
        var frame = record[GuestMemoryFrame.FrameOffset(ranges)..];
        if (read) request.CopyFrameTo(frame);
        else request.CopyFramePrefixTo(frame, WriteFrameSize);
    }

    void IGuestMemoryTransport.MemoryReplaced(GuestMemoryTable table)
    {
        var channel = _rings.GuestMemoryChannel;
        if (channel is null || table.RegionCount > GuestMemoryMessage.MaxRegions || Volatile.Read(ref _failed) != 0) return;
        Span<GuestMemoryRegion> regions = stackalloc GuestMemoryRegion[table.RegionCount];
        Span<int> fds = stackalloc int[table.RegionCount];
        for (int i = 0; i < regions.Length; i++)
        {
            var d = table.Regions[i].Description;
            regions[i] = new GuestMemoryRegion(d.GuestPhysAddr, d.MemorySize, d.MmapOffset);
            fds[i] = table.Regions[i].Fd.Value;
        }
        Span<byte> message = stackalloc byte[GuestMemoryMessage.MaxSize];
        int length = GuestMemoryMessage.WriteTable(message, table.Generation, regions);
        // Set first: the daemon may map the table even when its acknowledgement comes too late to be seen.
        table.OnReleased(_dropTable);
        try
        {
            lock (_channelLock)
            {
                if (Libc.SendWithFds(channel, message[..length], fds, Libc.MSG_NOSIGNAL) != length)
                {
                    LogTableNotSent(_log, table.Generation, Libc.LastErrno);
                    return;
                }
            }
            int status = AwaitAck(channel, table.Generation);
            if (status == 0) table.MarkDaemonMapped(this);
            else LogTableRefused(_log, table.Generation, status);
        }
        catch (ObjectDisposedException)
        {
        }
    }

    /// <summary>
    /// Reads acknowledgements until the one of <paramref name="generation"/> (older ones, which came too late, are
    /// skipped); returns its status, or -1 when none came within <see cref="TableAckTimeout"/> or the channel closed.
    /// Only the control thread reads the channel.
    /// </summary>
    private static int AwaitAck(System.Runtime.InteropServices.SafeHandle channel, ulong generation)
    {
        long deadline = Environment.TickCount64 + (long)TableAckTimeout.TotalMilliseconds;
        Span<byte> buffer = stackalloc byte[GuestMemoryMessage.HeaderSize];
        Span<int> noFds = stackalloc int[1];
        while (true)
        {
            long left = deadline - Environment.TickCount64;
            if (left <= 0) return -1;
            if (Libc.PollReadable(channel, (int)left) <= 0) continue;
            nint n = Libc.ReceiveWithFds(channel, buffer, noFds, Libc.MSG_DONTWAIT, out int fdCount, out _);
            for (int i = 0; i < fdCount; i++) Libc.close(noFds[i]);
            if (n == 0) return -1;
            if (n < 0) continue;
            if (GuestMemoryMessage.TryReadHeader(buffer[..(int)n], out var kind, out uint status, out ulong acked)
                && kind == GuestMemoryMessageKind.Ack && acked == generation)
                return (int)status;
        }
    }

    /// <summary>A table was released by every request and by the device: the daemon may unmap it once its own requests are done.</summary>
    private void DropTable(ulong generation)
    {
        var channel = _rings.GuestMemoryChannel;
        if (channel is null) return;
        Span<byte> message = stackalloc byte[GuestMemoryMessage.HeaderSize];
        GuestMemoryMessage.WriteHeader(message, GuestMemoryMessageKind.Drop, 0, generation);
        try
        {
            // Never blocks a worker: a full channel (a daemon that stopped reading) leaves the mapping to the daemon's exit.
            lock (_channelLock) Libc.SendWithFds(channel, message, default, Libc.MSG_NOSIGNAL | Libc.MSG_DONTWAIT);
        }
        catch (ObjectDisposedException)
        {
        }
    }

    public void Flush(QueueIndex queue)
    {
        try
        {
            _rings.GetQueue(queue.Value).Producer.Flush();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    public int Poll(QueueIndex queue)
    {
        var consumer = _rings.GetQueue(queue.Value).Consumer;
        int delivered = 0;
        try
        {
            while (true)
            {
                var status = consumer.TryPeek(out var frame);
                if (status is RingStatus.Ok or RingStatus.InvalidFrame)
                {
                    // An InvalidFrame carries a valid tag and no data: the request ends with an empty reply.
                    // Every reply of the batch goes back quietly; one interrupt covers them all once the ring runs dry
                    // below. The batch is bounded: the daemon answers only what this queue's worker submitted, and the
                    // worker submits nothing while it is here.
                    bool reply = frame.Tag != RingFrame.NoReplyTag;
                    if (reply && _sink.CompleteQuietly(frame.Tag, status == RingStatus.Ok ? frame.Data : default))
                        delivered++;
                    consumer.Release();
                    int at = queue.Value * CounterStride;
                    if (reply) Volatile.Write(ref _released[at + ExpectingReply], _released[at + ExpectingReply] + 1);
                    Volatile.Write(ref _released[at], _released[at] + 1);
                    continue;
                }
                if (status != RingStatus.WouldBlock) Fail(Reason(queue.Value, status, "completion"));
                break;
            }
        }
        catch (ObjectDisposedException)
        {
            // Whoever owns the ring set disposed it under a running device: nothing more can be delivered.
            Fail("the shared-memory ring was disposed");
        }
        if (delivered > 0) _sink.NotifyGuest(queue);
        return delivered;
    }

    /// <inheritdoc/>
    public int PeerPid => _rings.PeerPid;

    /// <summary>
    /// Frames of <paramref name="queue"/> the daemon has not answered yet (or whose answers the queue's worker has not
    /// taken yet). Exact on the queue's worker; from another thread, exact once that worker no longer submits.
    /// </summary>
    public long Outstanding(int queue)
        => Volatile.Read(ref _committed[queue * CounterStride]) - Volatile.Read(ref _released[queue * CounterStride]);

    /// <summary>
    /// Whether the daemon has answered every frame <paramref name="queue"/>'s worker committed, and the worker has
    /// taken every reply: for the planned restart's drain, from another thread, once the worker no longer submits to
    /// this transport. A request queue has answered when the worker has released a completion for each frame
    /// (<see cref="Outstanding"/> is 0). Queue 0 cannot wait for that: the daemon commits a no-reply frame's empty
    /// completion there without ringing (protocol/Ring/README.md, "Frames that get no reply"), so a worker asleep on
    /// its kick may hold it unreleased until the guest's next FORGET. What is true instead: the daemon releases a
    /// queue-0 frame only after it has run it, on its queue-0 dispatcher, so queue 0 has answered once the daemon has
    /// released every frame of the submission ring and every frame that expects a reply has had its reply taken.
    /// </summary>
    public bool Answered(int queue)
    {
        int at = queue * CounterStride;
        if (queue != 0) return Outstanding(queue) == 0;
        if (Volatile.Read(ref _committed[at + ExpectingReply]) != Volatile.Read(ref _released[at + ExpectingReply])) return false;
        try
        {
            return _rings.GetQueue(0).Producer.AllReleased;
        }
        catch (ObjectDisposedException)
        {
            // Handed back: its daemon ended and was replaced, which the caller finds out on its own.
            return false;
        }
    }

    public bool ArmWakeup(QueueIndex queue, out int replyFd, out int peerExitFd)
    {
        replyFd = peerExitFd = -1;
        // A failed transport has nothing more to deliver: the worker sleeps on its kick alone.
        if (Volatile.Read(ref _failed) != 0) return true;
        try
        {
            var consumer = _rings.GetQueue(queue.Value).Consumer;
            // Everything that can throw comes before arming: an armed ring always hands out its doorbell.
            int exitFd = _rings.PeerExitFd;
            if (!consumer.ArmWakeup()) return false;
            replyFd = consumer.DoorbellFd;
            peerExitFd = exitFd;
            return true;
        }
        catch (ObjectDisposedException)
        {
            Fail("the shared-memory ring was disposed");
            return true;
        }
    }

    public void DisarmWakeup(QueueIndex queue, bool replyRang, bool peerExited)
    {
        try
        {
            _rings.GetQueue(queue.Value).Consumer.DisarmWakeup(replyRang);
            if (!peerExited) return;
            // Replies the daemon committed before it exited are still returned.
            Poll(queue);
            Fail("the daemon process exited");
        }
        catch (ObjectDisposedException)
        {
        }
    }

    private static string Reason(int queue, RingStatus status, string ring) => status switch
    {
        RingStatus.PeerDead => "the daemon process exited",
        RingStatus.Closed => "the daemon closed the ring",
        _ => $"the {ring} ring of queue {queue} reports {status}",
    };

    private void Fail(string reason)
    {
        if (Interlocked.Exchange(ref _failed, 1) == 0) _sink.TransportFailed(reason);
    }

    /// <summary>Nothing to release: the queues' workers, which do all the work, are stopped by the device first.</summary>
    public void Dispose()
    {
    }

    [LoggerMessage(EventId = 51, Level = LogLevel.Warning, Message = "memory table {Generation} could not be handed to the daemon (errno {Errno}); its payloads travel in the ring")]
    private static partial void LogTableNotSent(ILogger log, ulong generation, int errno);

    [LoggerMessage(EventId = 52, Level = LogLevel.Warning, Message = "the daemon did not map memory table {Generation} (status {Status}; -1: no answer in time); its payloads travel in the ring")]
    private static partial void LogTableRefused(ILogger log, ulong generation, int status);

    [LoggerMessage(EventId = 50, Level = LogLevel.Warning, Message = "queue {Queue}: a request frame of {Length} bytes exceeds the ring's {Max}-byte frames; answered EIO")]
    private static partial void LogTooLarge(ILogger log, int queue, int length, int max);
}
