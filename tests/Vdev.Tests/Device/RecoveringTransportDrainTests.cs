using Hypervisor.Interop;
using Hypervisor.Protocol.Ring;
using Hypervisor.Vdev.Device;
using Hypervisor.Vdev.Tests.Frontend;

namespace Hypervisor.Vdev.Tests.Device;

/// <summary>
/// The planned restart's drain over the ring: the daemon commits a FORGET's empty completion on the hiprio queue without
/// ringing, so the hiprio worker, asleep on its kick, may hold such completions untaken until the guest's next FORGET.
/// The drain must not wait for them (a restart right after an <c>rm</c> would time out), and must still wait for
/// everything that is not answered: a frame the daemon has not run, a reply not yet taken, and on request queues every
/// completion, as before. This test's thread plays the queues' workers (it submits, and polls only when told) and the
/// daemon (its end of each ring set is attached in this process).
/// </summary>
public sealed class RecoveringTransportDrainTests : IDisposable
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(20);
    /// <summary>A drain that must not complete is given this long: it ends in the restart's refusal either way.</summary>
    private static readonly TimeSpan Short = TimeSpan.FromMilliseconds(300);

    private readonly InProcessRelauncher _relauncher = new();
    private readonly IPolledFuseTransport _transport;
    private readonly RecoveringTransport _recovering;
    private readonly Sink _sink = new();
    private readonly List<byte[]> _frames = [];
    private uint _generation = 1;

    public RecoveringTransportDrainTests()
    {
        _transport = (IPolledFuseTransport)RecoveringTransport.Factory(_relauncher, T, new ListLogger())
            .Create(new FuseDeviceInfo("t", 1, 64), _sink);
        _recovering = (RecoveringTransport)_transport;
        // Both queues' workers start on the first daemon.
        Assert.Equal(0, _transport.Poll(new QueueIndex(0)));
        Assert.Equal(0, _transport.Poll(new QueueIndex(1)));
    }

    public void Dispose()
    {
        ((IDisposable)_transport).Dispose();
        _relauncher.Dispose();
    }

    private sealed class Sink : IFuseCompletionSink
    {
        public int Replies;

        public bool Complete(ulong tag, ReadOnlySpan<byte> reply)
        {
            Interlocked.Increment(ref Replies);
            return true;
        }

        public bool CompleteQuietly(ulong tag, ReadOnlySpan<byte> reply) => Complete(tag, reply);

        public void NotifyGuest(QueueIndex queue)
        {
        }

        public int Failures;

        public void TransportFailed(string reason) => Interlocked.Increment(ref Failures);
    }

    /// <summary>A chain on queue <paramref name="q"/> at <paramref name="head"/> holding <paramref name="frame"/>, as a worker hands it over.</summary>
    private unsafe VirtqueueRequest Chain(int q, ushort head, byte[] frame)
    {
        // On the pinned heap: the request's segment points into it until the test ends.
        var bytes = GC.AllocateArray<byte>(frame.Length, pinned: true);
        frame.CopyTo(bytes, 0);
        _frames.Add(bytes);
        var request = new VirtqueueRequest();
        request.ResetChain();
        fixed (byte* p = bytes) request.AddReadable(new GuestBuffer(p, bytes.Length));
        Assert.True(request.CaptureHeader());
        request.Queue = new QueueIndex((ushort)q);
        request.Head = head;
        request.Tag = ((ulong)_generation << 32) | ((ulong)q << 16) | head;
        request.State = 1;
        return request;
    }

    /// <summary>Submits FORGETs on the hiprio queue, as its worker does after the guest's kick (the batch is flushed).</summary>
    private void Forgets(int count, int q = 0)
    {
        for (int i = 0; i < count; i++)
            Assert.True(_transport.Submit(Chain(q, (ushort)i, FuseFrames.ForgetRequest(100 + (ulong)i, 5, 1))));
        _transport.Flush(new QueueIndex((ushort)q));
    }

    /// <summary>
    /// The daemon of <paramref name="daemon"/> serves <paramref name="count"/> frames of queue <paramref name="q"/> as the
    /// passthrough daemon does: it runs each and commits its completion before it releases it, an empty one for a
    /// FORGET, and rings only for what the worker needs (never for a FORGET's empty completion on queue 0).
    /// </summary>
    private static void Serve(ShmRingSet daemon, int q, int count)
    {
        var queue = daemon.GetQueue(q);
        for (int i = 0; i < count; i++)
        {
            Assert.Equal(RingStatus.Ok, queue.Consumer.Peek(out var frame, T, CancellationToken.None));
            var reply = frame.Tag == RingFrame.NoReplyTag ? [] : new byte[16];
            Assert.Equal(RingStatus.Ok, queue.Producer.Reserve(reply.Length, out var span, T, CancellationToken.None));
            reply.CopyTo(span);
            queue.Producer.Commit(reply.Length, frame.Tag, notify: q != 0 || reply.Length != 0 || frame.Tag != RingFrame.NoReplyTag);
            queue.Consumer.Release();
        }
    }

    private Task<(string? Error, long StallNs)> Restart(TimeSpan drainTimeout)
    {
        var next = _relauncher.Open();
        return _recovering.HandOverAsync(next, () => { }, drainTimeout);
    }

    [Fact]
    public async Task APlannedRestartRightAfterForgets_WhoseEmptyCompletionsTheSleepingWorkerHasNotTaken_Completes()
    {
        var first = _relauncher.Daemons[0];
        Forgets(3);
        Serve(first, 0, 3);
        // The hiprio worker sleeps on its kick: it takes nothing until the guest's next FORGET.
        var (error, _) = await Restart(T);
        Assert.Null(error);
        // The worker's next wake-up takes the old daemon's completions and goes on with the new daemon.
        Assert.Equal(0, _transport.Poll(new QueueIndex(0)));
        _generation++;
        Forgets(1);
        var second = _relauncher.Daemons[^1];
        Assert.Equal(RingStatus.Ok, second.GetQueue(0).Consumer.Peek(out var frame, T, CancellationToken.None));
        Assert.Equal(RingFrame.NoReplyTag, frame.Tag);
        Assert.Equal(0, _sink.Replies);
    }

    [Fact]
    public void ADaemonThatEndsWithForgetCompletionsUntaken_IsReplaced_AndTheNextForgetGoesToItsSuccessor()
    {
        Forgets(3);
        Serve(_relauncher.Daemons[0], 0, 3);
        // The daemon ends (here: it closes its rings); the worker's wake-up takes what it committed and reports the end.
        _relauncher.Daemons[0].Close();
        Assert.Equal(0, _transport.Poll(new QueueIndex(0)));
        // The guest's next FORGET waits for the new daemon and reaches it.
        _generation++;
        Forgets(1);
        Assert.Equal(2, _relauncher.Daemons.Count);
        Assert.Equal(RingStatus.Ok, _relauncher.Daemons[1].GetQueue(0).Consumer.Peek(out var frame, T, CancellationToken.None));
        Assert.Equal(RingFrame.NoReplyTag, frame.Tag);
        Assert.Equal((0, 0), (_sink.Replies, _sink.Failures));
    }

    [Fact]
    public async Task TheDrainStillWaits_ForAForgetTheDaemonHasNotRun()
    {
        Forgets(2);
        Serve(_relauncher.Daemons[0], 0, 1);
        var (error, _) = await Restart(Short);
        Assert.NotNull(error);
        Serve(_relauncher.Daemons[0], 0, 1);
        (error, _) = await Restart(T);
        Assert.Null(error);
    }

    [Fact]
    public async Task TheDrainStillWaits_ForAHiprioReplyNotTaken()
    {
        // A request that expects a reply on the hiprio queue (a guest may send one there): its reply must reach it.
        Assert.True(_transport.Submit(Chain(0, 7, FuseFrames.GetattrRequest(200, 1))));
        _transport.Flush(new QueueIndex(0));
        Serve(_relauncher.Daemons[0], 0, 1);
        var (error, _) = await Restart(Short);
        Assert.NotNull(error);
        Assert.Equal(1, _transport.Poll(new QueueIndex(0)));
        (error, _) = await Restart(T);
        Assert.Null(error);
        Assert.Equal(1, _sink.Replies);
    }

    [Fact]
    public async Task OnARequestQueue_TheDrainStillWaitsForEveryCompletion_AForgetsIncluded()
    {
        Forgets(1, q: 1);
        Serve(_relauncher.Daemons[0], 1, 1);
        var (error, _) = await Restart(Short);
        Assert.NotNull(error);
        Assert.Equal(0, _transport.Poll(new QueueIndex(1)));
        (error, _) = await Restart(T);
        Assert.Null(error);
    }
}
