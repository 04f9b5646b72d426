using Hypervisor.Interop;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Passthrough.Transport;
using Hypervisor.Protocol.Fuse;
using Hypervisor.Protocol.Ring;
using Microsoft.Extensions.Logging.Abstractions;

namespace Hypervisor.Passthrough.Tests.Transport;

/// <summary>
/// The daemon's dispatchers and the vdev's worker asleep on the completion doorbell (as the vdev's hiprio worker sleeps
/// between FORGETs): on queue 0 the empty completion of a frame sent with <see cref="RingFrame.NoReplyTag"/> is
/// committed without ringing, so it does not wake the worker for a completion it ignores; every other completion (a
/// reply, an empty one with a real tag, any on a request queue) rings as before. A completion ring that fills up with
/// unannounced completions still wakes the worker, so that it makes room.
/// </summary>
public sealed class RingTransportHiprioTests : IDisposable
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(30);
    private readonly ShmRingSet _rings;
    private readonly FuseEngine _engine;
    private readonly RingTransport _transport;
    // How often each queue's dispatcher ran dry: it announces its batch's replies just before.
    private readonly int[] _idle = new int[2];
    private readonly Forgets _fs = new();

    public RingTransportHiprioTests()
    {
        _rings = ShmRingSet.Create(2); // hiprio and one request queue
        // The daemon's side gets its own descriptors, as it would by inheritance.
        var fds = new RingFds(Libc.dup(_rings.Fds.MemFd), [.. _rings.Fds.Doorbells.Select(fd => Libc.dup(fd))]);
        _engine = new FuseEngine(_fs);
        _transport = RingTransport.Start(_engine, NullLogger.Instance, fds.ToString(), queueIdle: Idle);
        var queue = _rings.GetQueue(1);
        RingSubmit.Submit(queue, FuseFrames.Init(), 1);
        Assert.Equal(RingStatus.Ok, queue.Consumer.Peek(out var init, T, CancellationToken.None));
        Assert.Equal(0, FuseFrames.Header(init.Data).Error);
        queue.Consumer.Release();
        // Both dispatchers have run dry once, so each now sleeps until a frame comes.
        Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref _idle[0]) > 0 && Volatile.Read(ref _idle[1]) > 0, T), "a dispatcher never ran dry");
    }

    private void Idle()
    {
        // Runs on the thread that served the queue ("ring-qN").
        if (Thread.CurrentThread.Name is ['r', 'i', 'n', 'g', '-', 'q', var digit] && digit is '0' or '1') Interlocked.Increment(ref _idle[digit - '0']);
    }

    public void Dispose()
    {
        _transport.Dispose();
        _engine.Dispose();
        _rings.Dispose();
    }

    private static byte[] Forget(ulong unique, ulong node) => FuseFrames.Build(FuseOpcode.Forget, unique, node, FuseFrames.Struct(new ForgetIn { Nlookup = 1 }));

    private static byte[] GetAttr(ulong unique) => FuseFrames.Build(FuseOpcode.GetAttr, unique, 1, FuseFrames.Struct(new GetAttrIn()));

    /// <summary>
    /// Whether <paramref name="doorbell"/> (an eventfd, non-blocking) was rung, within <paramref name="waitMs"/>; reading
    /// it resets it, as the worker's disarm would.
    /// </summary>
    private static bool Rang(int doorbell, int waitMs)
    {
        Span<byte> count = stackalloc byte[8];
        long deadline = Environment.TickCount64 + waitMs;
        while (true)
        {
            if (Libc.read(doorbell, count, 8) == 8) return true;
            if (Environment.TickCount64 >= deadline) return false;
            Thread.Sleep(1);
        }
    }

    /// <summary>
    /// Sends <paramref name="frame"/> on <paramref name="q"/> with <paramref name="tag"/> while this side sleeps armed on
    /// the completion doorbell, waits until the daemon's dispatcher has served it and run dry again (its batch is then
    /// announced or not), and returns whether the doorbell rang, with the completion's tag and length.
    /// </summary>
    private (bool Rang, ulong Tag, int Length) Exchange(int q, byte[] frame, ulong tag)
    {
        var queue = _rings.GetQueue(q);
        int idle = Volatile.Read(ref _idle[q]);
        Assert.True(queue.Consumer.ArmWakeup(), "a completion was already waiting");
        bool rang;
        try
        {
            RingSubmit.Submit(queue, frame, tag);
            Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref _idle[q]) > idle, T), $"queue {q}'s dispatcher did not serve the frame");
            rang = Rang(queue.Consumer.DoorbellFd, 0);
        }
        finally
        {
            queue.Consumer.DisarmWakeup(rang: true);
        }
        // The completion is committed either way.
        Assert.Equal(RingStatus.Ok, queue.Consumer.TryPeek(out var completion));
        var result = (rang, completion.Tag, completion.Data.Length);
        queue.Consumer.Release();
        Assert.Equal(RingStatus.WouldBlock, queue.Consumer.TryPeek(out _));
        return result;
    }

    [Fact]
    public void ANoReplyForgetOnQueue0_IsCompletedEmptily_WithoutRingingTheSleepingWorker()
    {
        var (rang, tag, length) = Exchange(0, Forget(2, 5), RingFrame.NoReplyTag);
        Assert.Equal((RingFrame.NoReplyTag, 0), (tag, length));
        Assert.False(rang, "the daemon rang the hiprio worker for the empty completion of a FORGET it ignores");
        // The FORGET was run all the same.
        Assert.Equal(new[] { (5UL, 1UL) }, _fs.Forgotten);
    }

    [Fact]
    public void OnQueue0_AReplyAndAnEmptyCompletionWithARealTag_StillRing()
    {
        // A reply: the guest waits for it.
        var (rang, tag, length) = Exchange(0, GetAttr(3), 3);
        Assert.Equal(3UL, tag);
        Assert.True(length > 16, "GETATTR was not answered with its attributes");
        Assert.True(rang, "a reply on queue 0 did not ring");
        // An empty completion with a real tag ends a guest request (here: a FORGET sent as if it expected a reply).
        (rang, tag, length) = Exchange(0, Forget(4, 6), 4);
        Assert.Equal((4UL, 0), (tag, length));
        Assert.True(rang, "an empty completion with a real tag on queue 0 did not ring");
        // A reply to a no-reply tag (a frame that claims to be a FORGET's but is answered): it carries bytes, so it rings.
        (rang, tag, length) = Exchange(0, GetAttr(5), RingFrame.NoReplyTag);
        Assert.Equal(RingFrame.NoReplyTag, tag);
        Assert.True(length > 0);
        Assert.True(rang, "a completion with bytes on queue 0 did not ring");
    }

    [Fact]
    public void OnARequestQueue_ANoReplyForgetsEmptyCompletion_StillRings()
    {
        var (rang, tag, length) = Exchange(1, Forget(2, 7), RingFrame.NoReplyTag);
        Assert.Equal((RingFrame.NoReplyTag, 0), (tag, length));
        Assert.True(rang, "request queues announce every completion");
    }

    [Fact]
    public void ACompletionRingFullOfUnannouncedForgetCompletions_WakesTheSleepingWorker_AndNothingIsLost()
    {
        var queue = _rings.GetQueue(0);
        Assert.True(queue.Consumer.ArmWakeup(), "a completion was already waiting");
        int doorbell = queue.Consumer.DoorbellFd;
        var frame = Forget(0, 8);
        // The completion ring holds a few times the largest reply's room in empty completions: the daemon runs short of
        // room for its next reply long before this many, and must ring then, for only the worker can make room.
        long limit = 4L * _rings.DirectionBytes / RingLayout.RecordAlignment;
        long sent = 0;
        bool rang = false;
        var deadline = DateTime.UtcNow + T;
        try
        {
            // Never blocks on a full submission ring: once the daemon waits for room it consumes no more, and this thread
            // must then see the doorbell.
            while (!rang && sent < limit && DateTime.UtcNow < deadline)
            {
                if (queue.Producer.TryReserve(frame.Length, out var span) == RingStatus.Ok)
                {
                    frame.CopyTo(span);
                    queue.Producer.Commit(frame.Length, RingFrame.NoReplyTag, notify: false);
                    if (++sent % 64 != 0) continue;
                    queue.Producer.Flush();
                    rang = Rang(doorbell, 0);
                    continue;
                }
                queue.Producer.Flush();
                rang = Rang(doorbell, 50);
            }
            if (!rang)
            {
                queue.Producer.Flush();
                rang = Rang(doorbell, (int)T.TotalMilliseconds);
            }
        }
        finally
        {
            queue.Consumer.DisarmWakeup(rang: true);
        }
        Assert.True(rang, $"{sent} FORGETs filled the completion ring and the daemon never woke the worker to make room");
        // The worker releases what it finds; the daemon goes on, and every FORGET gets its one empty completion.
        long completed = 0;
        while (completed < sent)
        {
            Assert.Equal(RingStatus.Ok, queue.Consumer.Peek(out var completion, T, CancellationToken.None));
            Assert.Equal((RingFrame.NoReplyTag, 0), (completion.Tag, completion.Data.Length));
            queue.Consumer.Release();
            completed++;
        }
        Assert.True(SpinWait.SpinUntil(() => queue.Producer.AllReleased, T), "the daemon did not consume every FORGET");
        Assert.Equal(RingStatus.WouldBlock, queue.Consumer.TryPeek(out _));
        Assert.Equal(sent, _fs.Count);
    }

    /// <summary>Records the FORGETs it is given, and answers GETATTR.</summary>
    private sealed class Forgets : IFileSystem
    {
        private readonly List<(ulong Node, ulong Count)> _forgotten = [];
        private long _count;

        public (ulong, ulong)[] Forgotten
        {
            get
            {
                lock (_forgotten) return [.. _forgotten];
            }
        }

        public long Count => Interlocked.Read(ref _count);

        public void Forget(NodeId node, ulong count)
        {
            if (Interlocked.Increment(ref _count) > 16) return;
            lock (_forgotten) _forgotten.Add((node.Value, count));
        }

        public Result<AttrOut> GetAttr(in FuseContext ctx, NodeId node, FileHandle? handle) => new AttrOut { AttrValid = 1 };
    }
}
