using Hypervisor.Protocol.Ring;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Vdev.Device;

/// <summary>
/// The transport to the passthrough daemon over the shared-memory ring set: ring queue <c>i</c> carries
/// virtqueue <c>i</c> (0 = hiprio, 1..N = request queues), so each ring has exactly one producer (that
/// virtqueue's worker) and one consumer (this transport's completion thread for it), as the ring requires.
/// Request frames are copied once, from guest memory straight into the submission ring; replies are copied
/// once, from the completion ring straight into guest memory. The daemon answers every submission, FORGET
/// included, with a completion carrying its tag (empty for no reply); frames that get no reply are
/// submitted with <see cref="NoReplyTag"/>, whose completion the device ignores.
/// The transport does not own the ring set; whoever created it (and started the daemon) disposes it.
/// </summary>
public sealed partial class ShmRingTransport : IFuseTransport
{
    /// <summary>Tag of frames that get no reply (FORGET, BATCH_FORGET, INTERRUPT); never a valid device tag.</summary>
    public const ulong NoReplyTag = ulong.MaxValue;

    private readonly ShmRingSet _rings;
    private readonly IFuseCompletionSink _sink;
    private readonly ILogger _log;
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread[] _completers;
    private int _failed;

    private ShmRingTransport(ShmRingSet rings, IFuseCompletionSink sink, ILogger log, int queues)
    {
        _rings = rings;
        _sink = sink;
        _log = log;
        _completers = new Thread[queues];
        for (int q = 0; q < queues; q++)
        {
            var queue = rings.GetQueue(q);
            _completers[q] = new Thread(() => Complete(queue)) { IsBackground = true, Name = $"ring-cq{q}" };
            _completers[q].Start();
        }
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
            return new ShmRingTransport(rings, sink, log, queues);
        }
    }

    public bool Submit(FuseRequest request)
    {
        if (Volatile.Read(ref _failed) != 0) return false;
        var producer = _rings.GetQueue(request.Queue.Value).Producer;
        int length = request.ReadableLength;
        RingStatus status;
        try
        {
            // Waits while the ring is full (backpressure on this virtqueue only); returns at once when the daemon is gone.
            status = producer.Reserve(length, out var frame, Timeout.InfiniteTimeSpan, request.Cancellation);
            if (status == RingStatus.Ok)
            {
                request.CopyFrameTo(frame);
                producer.Commit(length, request.ExpectsReply ? request.Tag : NoReplyTag);
                return true;
            }
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
        if (status == RingStatus.TooLarge) LogTooLarge(_log, request.Queue.Value, length, producer.MaxFrameSize);
        else if (status != RingStatus.Canceled) Fail($"the submission ring of queue {request.Queue.Value} reports {status}");
        return false;
    }

    private void Complete(RingQueue queue)
    {
        try
        {
            while (true)
            {
                var status = queue.Consumer.Peek(out var frame, Timeout.InfiniteTimeSpan, _stop.Token);
                if (status is RingStatus.Ok or RingStatus.InvalidFrame)
                {
                    // An InvalidFrame carries a valid tag and no data: the request ends with an empty reply.
                    if (frame.Tag != NoReplyTag) _sink.Complete(frame.Tag, status == RingStatus.Ok ? frame.Data : default);
                    queue.Consumer.Release();
                    continue;
                }
                if (status != RingStatus.Canceled) Fail(status switch
                {
                    RingStatus.PeerDead => "the daemon process exited",
                    RingStatus.Closed => "the daemon closed the ring",
                    _ => $"the completion ring of queue {queue.Index} reports {status}",
                });
                return;
            }
        }
        catch (ObjectDisposedException)
        {
        }
    }

    private void Fail(string reason)
    {
        if (Interlocked.Exchange(ref _failed, 1) == 0) _sink.TransportFailed(reason);
    }

    public void Dispose()
    {
        _stop.Cancel();
        foreach (var t in _completers) t.Join();
        _stop.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "queue {Queue}: a request frame of {Length} bytes exceeds the ring's {Max}-byte frames; answered EIO")]
    private static partial void LogTooLarge(ILogger log, int queue, int length, int max);
}
