using Hypervisor.Protocol.Ring;
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
/// get no reply are submitted with <see cref="NoReplyTag"/>, whose completion the device ignores.
/// The transport does not own the ring set; whoever created it (and started the daemon) disposes it.
/// </summary>
public sealed partial class ShmRingTransport : IPolledFuseTransport
{
    /// <summary>Tag of frames that get no reply (FORGET, BATCH_FORGET, INTERRUPT); never a valid device tag.</summary>
    public const ulong NoReplyTag = ulong.MaxValue;

    /// <summary>
    /// How long a submission waits for space in a full ring before it returns the replies that arrived meanwhile:
    /// the daemon may be waiting for room in the completion ring, which only this thread makes.
    /// </summary>
    private static readonly TimeSpan FullRingPoll = TimeSpan.FromMilliseconds(1);

    /// <summary>Most replies returned to the guest before its interrupt is raised, when more keep coming.</summary>
    private const int MaxQuietCompletions = 8;

    private readonly ShmRingSet _rings;
    private readonly IFuseCompletionSink _sink;
    private readonly ILogger _log;
    private int _failed;

    private ShmRingTransport(ShmRingSet rings, IFuseCompletionSink sink, ILogger log)
    {
        _rings = rings;
        _sink = sink;
        _log = log;
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

    public bool Submit(VirtqueueRequest request)
    {
        if (Volatile.Read(ref _failed) != 0) return false;
        var queue = _rings.GetQueue(request.Queue.Value);
        int length = request.ReadableLength;
        RingStatus status;
        try
        {
            // While the ring is full (backpressure on this virtqueue only), return the replies that arrive: this
            // thread is the only one that makes room in the completion ring. Returns at once when the daemon is
            // gone or the ring stops.
            Span<byte> frame;
            while ((status = queue.Producer.Reserve(length, out frame, FullRingPoll, request.Cancellation)) == RingStatus.Timeout)
                Poll(request.Queue);
            if (status == RingStatus.Ok)
            {
                request.CopyFrameTo(frame);
                // The daemon is woken once per batch, by Flush.
                queue.Producer.Commit(length, request.ExpectsReply ? request.Tag : NoReplyTag, notify: false);
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
        int delivered = 0, quiet = 0;
        try
        {
            while (true)
            {
                var status = consumer.TryPeek(out var frame);
                if (status is RingStatus.Ok or RingStatus.InvalidFrame)
                {
                    // An InvalidFrame carries a valid tag and no data: the request ends with an empty reply.
                    if (frame.Tag != NoReplyTag && _sink.CompleteQuietly(frame.Tag, status == RingStatus.Ok ? frame.Data : default))
                    {
                        delivered++;
                        if (++quiet == MaxQuietCompletions)
                        {
                            _sink.NotifyGuest(queue);
                            quiet = 0;
                        }
                    }
                    consumer.Release();
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
        if (quiet > 0) _sink.NotifyGuest(queue);
        return delivered;
    }

    /// <inheritdoc/>
    public int PeerPid => _rings.PeerPid;

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

    [LoggerMessage(EventId = 50, Level = LogLevel.Warning, Message = "queue {Queue}: a request frame of {Length} bytes exceeds the ring's {Max}-byte frames; answered EIO")]
    private static partial void LogTooLarge(ILogger log, int queue, int length, int max);
}
