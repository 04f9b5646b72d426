using System.Diagnostics;
using System.Buffers.Binary;
using Hypervisor.Interop;
using Hypervisor.Protocol.Ring;
using Hypervisor.Vdev.Device;
using Hypervisor.Vdev.Tests.Frontend;
using Hypervisor.Vdev.VhostUser;

namespace Hypervisor.Vdev.Tests.Device;

/// <summary>
/// The vdev over the real shared-memory ring: a stand-in daemon attaches to the ring set in this process
/// (with duplicated descriptors, as an inheriting child would hold them) and answers like the passthrough
/// daemon's ring transport does: one completion per submission, empty for FORGET.
/// </summary>
public sealed class ShmRingTransportTests : IDisposable
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(10);
    private readonly string _dir = Directory.CreateTempSubdirectory("vdev-ring-").FullName;

    private static RingFds Duplicate(RingFds f) => new(Libc.dup(f.MemFd), f.Doorbells.Select(fd => Libc.dup(fd)).ToArray());

    /// <summary>
    /// The stand-in daemon: one thread per queue echoing frames (TestTransport.Answer), FORGET answered empty, each
    /// reply after <paramref name="delayMs"/> of sleep and <paramref name="busyMicros"/> of busy work.
    /// </summary>
    private static Thread[] Serve(ShmRingSet daemon, CancellationToken ct, int delayMs = 0, int busyMicros = 0)
    {
        var threads = new Thread[daemon.QueueCount];
        for (int q = 0; q < threads.Length; q++)
        {
            var queue = daemon.GetQueue(q);
            threads[q] = new Thread(() =>
            {
                while (queue.Consumer.Peek(out var frame, Timeout.InfiniteTimeSpan, ct) == RingStatus.Ok)
                {
                    var request = frame.Data.ToArray();
                    var tag = frame.Tag;
                    queue.Consumer.Release();
                    bool forget = BinaryPrimitives.ReadUInt32LittleEndian(request.AsSpan(4)) == FuseFrames.Forget;
                    var reply = forget ? [] : TestTransport.Answer(request);
                    if (delayMs > 0) Thread.Sleep(delayMs);
                    for (long until = Stopwatch.GetTimestamp() + busyMicros * Stopwatch.Frequency / 1_000_000; Stopwatch.GetTimestamp() < until;)
                        Thread.SpinWait(16);
                    if (queue.Producer.Reserve(reply.Length, out var span, Timeout.InfiniteTimeSpan, ct) != RingStatus.Ok) return;
                    reply.CopyTo(span);
                    queue.Producer.Commit(reply.Length, tag);
                }
            }) { IsBackground = true };
            threads[q].Start();
        }
        return threads;
    }

    /// <summary>Runs a device over <paramref name="rings"/> and connects the test front-end with its queues (64 entries) set up.</summary>
    private (Task<int> Run, VhostUserFrontend Frontend, IReadOnlyList<FrontendQueue> Queues) StartDevice(
        ShmRingSet rings, int requestQueues, GuestRam ram, ListLogger log, int slotBytes = 64 << 10,
        TimeSpan? replySpin = null, Func<IFuseTransportFactory, IFuseTransportFactory>? wrap = null)
    {
        var sock = Path.Combine(_dir, "s.sock");
        var options = new DeviceOptions { SocketPath = sock, RequestQueues = requestQueues };
        if (replySpin is { } spin) options.ReplySpin = spin;
        var factory = ShmRingTransport.Factory(rings, log);
        var run = VhostUserDevice.RunAsync(options, wrap?.Invoke(factory) ?? factory, log, default);
        var fe = VhostUserFrontend.Connect(sock, T);
        fe.Negotiate();
        fe.SetMemTable(ram);
        return (run, fe, fe.SetupQueues(ram, 1 + requestQueues, 64, slotBytes));
    }

    [Fact]
    public async Task RequestsTravelThroughTheRingAndADaemonThatGoesAwayTurnsIntoEio()
    {
        using var rings = ShmRingSet.Create(3);
        var daemon = ShmRingSet.Attach(Duplicate(rings.Fds));
        using var daemonStop = new CancellationTokenSource();
        var served = Serve(daemon, daemonStop.Token);

        var log = new ListLogger();
        using var ram = new GuestRam(64 << 20);
        var (run, fe, qs) = StartDevice(rings, 2, ram, log);
        using var frontend = fe;

        // Both request queues, direct and indirect, a large READ reply scattered over segments.
        for (int q = 1; q <= 2; q++)
            for (ulong i = 0; i < 50; i++)
            {
                var frame = FuseFrames.GetattrRequest(i + 1, 1);
                Assert.Equal(TestTransport.Answer(frame), qs[q].Transact(frame, 4096, T, indirect: (i & 1) == 1));
            }
        var read = FuseFrames.ReadRequest(99, 2, 3, 0, 30000);
        ushort h = qs[1].Submit(read, 16 + 30000, indirect: true, replySegments: 8);
        var (head, len) = qs[1].WaitUsed(T);
        Assert.Equal(h, head);
        Assert.Equal(TestTransport.Answer(read), qs[1].ReplyBytes(head, len));

        // FORGET on hiprio: the chain comes back at once; the daemon's empty completion is ignored.
        for (ulong i = 0; i < 20; i++)
        {
            ushort fh = qs[0].Submit(FuseFrames.ForgetRequest(1000 + i, 5, 1), 0);
            Assert.Equal((fh, 0u), qs[0].WaitUsed(T));
        }
        Thread.Sleep(100);
        Assert.Equal(0, qs[0].InFlight);
        Assert.False(qs[0].TryTakeUsed(out _, out _));

        // The daemon closes its end: outstanding and later requests get EIO.
        daemonStop.Cancel();
        foreach (var t in served) t.Join();
        daemon.Dispose();
        var after = qs[2].Transact(FuseFrames.GetattrRequest(500, 1), 4096, T);
        Assert.Equal((16u, -5, 500ul), FuseFrames.ReadOutHeader(after));
        // The thread that noticed the daemon go marks the transport down before it logs, so a worker can answer EIO
        // first: wait for the line, then check it came once.
        SpinWait.SpinUntil(() => log.Count("FUSE daemon is gone") > 0, T);
        Assert.Equal(1, log.Count("FUSE daemon is gone"));

        fe.Disconnect();
        Assert.Equal(0, await run.WaitAsync(T));
    }

    /// <summary>The ring transport, counting the times the queue's worker went to sleep waiting for a kick or a reply.</summary>
    private sealed class SleepCounting(IFuseTransportFactory inner) : IFuseTransportFactory
    {
        public int Sleeps;

        public IFuseTransport Create(FuseDeviceInfo device, IFuseCompletionSink sink) => new Transport(this, (IPolledFuseTransport)inner.Create(device, sink));

        private sealed class Transport(SleepCounting counter, IPolledFuseTransport inner) : IPolledFuseTransport
        {
            public bool Submit(VirtqueueRequest request) => inner.Submit(request);
            public void Flush(QueueIndex queue) => inner.Flush(queue);
            public int Poll(QueueIndex queue) => inner.Poll(queue);
            public void DisarmWakeup(QueueIndex queue, bool replyRang, bool peerExited) => inner.DisarmWakeup(queue, replyRang, peerExited);
            public void Dispose() => inner.Dispose();

            public bool ArmWakeup(QueueIndex queue, out int replyFd, out int peerExitFd)
            {
                bool armed = inner.ArmWakeup(queue, out replyFd, out peerExitFd);
                if (armed && queue.Value == 1) Interlocked.Increment(ref counter.Sleeps);
                return armed;
            }
        }
    }

    /// <summary>
    /// Sends <paramref name="count"/> GETATTRs (or READs of <paramref name="readSize"/> bytes) one at a time; returns
    /// how often queue 1's worker slept per request.
    /// </summary>
    private double SleepsPerRequest(TimeSpan replySpin, int count, int readSize = 0, int daemonMicros = 100)
    {
        using var rings = ShmRingSet.Create(2);
        using var daemon = ShmRingSet.Attach(Duplicate(rings.Fds));
        using var daemonStop = new CancellationTokenSource();
        var served = Serve(daemon, daemonStop.Token, busyMicros: daemonMicros);
        var log = new ListLogger();
        using var ram = new GuestRam(64 << 20);
        SleepCounting? counting = null;
        var (run, fe, qs) = StartDevice(rings, 1, ram, log, slotBytes: 128 << 10, replySpin: replySpin, wrap: f => counting = new SleepCounting(f));
        try
        {
            for (ulong i = 0; i < 20; i++) qs[1].Transact(FuseFrames.GetattrRequest(i + 1, 1), 4096, T);
            int before = Volatile.Read(ref counting!.Sleeps);
            for (ulong i = 0; i < (ulong)count; i++)
            {
                var frame = readSize == 0 ? FuseFrames.GetattrRequest(100 + i, 1) : FuseFrames.ReadRequest(100 + i, 2, 3, 0, (uint)readSize);
                Assert.Equal(TestTransport.Answer(frame), qs[1].Transact(frame, 16 + Math.Max(readSize, 4096), T));
            }
            return (double)(Volatile.Read(ref counting.Sleeps) - before) / count;
        }
        finally
        {
            fe.Disconnect();
            fe.Dispose();
            Assert.Equal(0, run.Wait(T) ? run.Result : -1);
            daemonStop.Cancel();
            foreach (var t in served) t.Join();
        }
    }

    [Fact]
    public void AGuestWaitingOnOneSmallRequestAtATime_GetsItsReplyWithoutTheWorkerSleepingForIt()
    {
        // The stand-in daemon answers each request after 100 µs of work. Without the reply spin the worker sleeps
        // twice per request: for the reply, then for the next kick. With it, only for the kick. A spin far longer
        // than the daemon takes keeps this independent of the machine's load.
        double without = SleepsPerRequest(TimeSpan.Zero, 200);
        // The worker banks four spins of credit (it earns an eighth of the time passing): 4 x 200 ms outlasts 200
        // requests even when a loaded machine makes each take milliseconds.
        double with = SleepsPerRequest(TimeSpan.FromMilliseconds(200), 200);
        Assert.True(without >= 1.75, $"without the spin the worker slept {without:F2} times per request; expected about 2");
        Assert.True(with <= 1.25, $"with the spin the worker slept {with:F2} times per request; expected about 1");
        // A large transfer takes the daemon longer than a spin is worth: the worker sleeps for it.
        double large = SleepsPerRequest(TimeSpan.FromMilliseconds(20), 100, readSize: 32 << 10);
        Assert.True(large >= 1.75, $"for 32 KiB reads the worker slept {large:F2} times per request; expected about 2");
        // A daemon that takes 2 ms per request would keep a worker that always waits for it spinning nearly all the
        // time: the worker's spin is capped at an eighth of the time passing (after a start-up credit of four
        // spins), so over 300 requests it sleeps for most of the replies.
        double slow = SleepsPerRequest(TimeSpan.FromMilliseconds(20), 300, daemonMicros: 2000);
        Assert.True(slow >= 1.6, $"with a 2 ms daemon the worker slept {slow:F2} times per request; expected most replies to be slept for");
    }

    [Fact]
    public async Task ABurstLargerThanBothRingsCompletesEveryRequestWithItsOwnReply()
    {
        // Rings that hold only a few 60 KiB frames each way, and 48 such requests in flight at once: the queue's
        // worker must keep returning replies while it waits for room to submit, or the daemon (blocked on a full
        // completion ring) and the vdev (blocked on a full submission ring) would wait for each other forever.
        const int body = 60 << 10, count = 48;
        using var rings = ShmRingSet.Create(2, maxFrameSize: body + 4096);
        Assert.True(rings.DirectionBytes < (long)count * body / 4, $"the test needs rings far smaller than the burst ({rings.DirectionBytes} bytes)");
        var daemon = ShmRingSet.Attach(Duplicate(rings.Fds));
        using var daemonStop = new CancellationTokenSource();
        var served = Serve(daemon, daemonStop.Token);

        var log = new ListLogger();
        using var ram = new GuestRam(64 << 20);
        var (run, fe, qs) = StartDevice(rings, 1, ram, log, slotBytes: 2 * (body + 64) + 4096);
        using var frontend = fe;

        var expected = new Dictionary<ushort, byte[]>();
        for (int i = 0; i < count; i++)
        {
            var payload = new byte[body];
            for (int j = 0; j < payload.Length; j++) payload[j] = (byte)(i * 31 + j);
            var frame = FuseFrames.Request(4242, (ulong)(1000 + i), 1, payload);
            expected.Add(qs[1].Submit(frame, 16 + body, indirect: true, replySegments: 3), TestTransport.Answer(frame));
        }
        for (int i = 0; i < count; i++)
        {
            var (head, len) = qs[1].WaitUsed(T);
            Assert.True(expected.Remove(head, out var want), $"head {head} completed twice or never submitted");
            Assert.Equal(want, qs[1].ReplyBytes(head, len));
        }
        Assert.Empty(expected);

        await StopAsync(daemonStop, served, daemon, fe, run);
    }

    [Fact]
    public async Task StoppingARingWaitsForTheDaemonsRepliesAndReturnsThemToTheGuest()
    {
        // GET_VRING_BASE drains: with the queue's worker stopped, the replies still in the daemon's hands must be
        // collected by the stopping thread and reach the used ring before the front-end gets the ring's base.
        using var rings = ShmRingSet.Create(2);
        var daemon = ShmRingSet.Attach(Duplicate(rings.Fds));
        using var daemonStop = new CancellationTokenSource();
        var served = Serve(daemon, daemonStop.Token, delayMs: 150);

        var log = new ListLogger();
        using var ram = new GuestRam(64 << 20);
        var (run, fe, qs) = StartDevice(rings, 1, ram, log);
        using var frontend = fe;
        var expected = new Dictionary<ushort, byte[]>();
        for (ulong i = 0; i < 3; i++)
        {
            var frame = FuseFrames.GetattrRequest(700 + i, 1);
            expected.Add(qs[1].Submit(frame, 4096), TestTransport.Answer(frame));
        }
        Thread.Sleep(50);

        Assert.Equal(3u, fe.GetVringBase(1));
        for (int i = 0; i < 3; i++)
        {
            Assert.True(qs[1].TryTakeUsed(out var head, out var len), $"only {i} of 3 replies were in the used ring when GET_VRING_BASE returned");
            Assert.True(expected.Remove(head, out var want));
            Assert.Equal(want, qs[1].ReplyBytes(head, len));
        }
        Assert.Equal(0, log.Count("still in flight"));

        await StopAsync(daemonStop, served, daemon, fe, run);
    }

    /// <summary>Stops the stand-in daemon, disconnects the front-end and checks that the device exits cleanly.</summary>
    private static async Task StopAsync(CancellationTokenSource daemonStop, Thread[] served, ShmRingSet daemon, VhostUserFrontend fe, Task<int> run)
    {
        daemonStop.Cancel();
        foreach (var t in served) t.Join();
        daemon.Dispose();
        fe.Disconnect();
        Assert.Equal(0, await run.WaitAsync(T));
    }

    [Fact]
    public async Task ARingSetWithTooFewQueuesIsAConfigurationError()
    {
        using var rings = ShmRingSet.Create(2);
        var log = new ListLogger();
        var rc = await VhostUserDevice.RunAsync(new DeviceOptions { SocketPath = Path.Combine(_dir, "t.sock"), RequestQueues = 2 }, ShmRingTransport.Factory(rings, log), log, default);
        Assert.Equal(VhostUserDevice.ExitConfig, rc);
        Assert.True(log.Contains("ShmRingSet.Create(3)"), log.ToString());
        Assert.False(File.Exists(Path.Combine(_dir, "t.sock")));
    }

    /// <summary>A sink that counts what the transport hands the device: replies, and interrupts raised per queue.</summary>
    private sealed class CountingSink : IFuseCompletionSink
    {
        public int Quiet;
        public int Loud;
        public readonly List<int> NotifiedAfter = [];

        public bool Complete(ulong tag, ReadOnlySpan<byte> reply)
        {
            Loud++;
            return true;
        }

        public bool CompleteQuietly(ulong tag, ReadOnlySpan<byte> reply)
        {
            Quiet++;
            return true;
        }

        public void NotifyGuest(QueueIndex queue) => NotifiedAfter.Add(Quiet);

        public void TransportFailed(string reason) => throw new InvalidOperationException(reason);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(8)]
    [InlineData(9)]
    [InlineData(40)]
    public void ABatchOfRepliesIsReturnedQuietlyAndRaisesOneInterruptWhenTheRingRunsDry(int replies)
    {
        using var rings = ShmRingSet.Create(2);
        using var daemon = ShmRingSet.Attach(Duplicate(rings.Fds));
        var sink = new CountingSink();
        using var transport = (IPolledFuseTransport)ShmRingTransport.Factory(rings, new ListLogger()).Create(new FuseDeviceInfo("t", 1, 64), sink);
        var producer = daemon.GetQueue(1).Producer;
        for (int i = 0; i < replies; i++)
        {
            var reply = TestTransport.Answer(FuseFrames.GetattrRequest((ulong)i + 1, 1));
            Assert.Equal(RingStatus.Ok, producer.Reserve(reply.Length, out var span, T, default));
            reply.CopyTo(span);
            producer.Commit(reply.Length, (ulong)i + 1, notify: false);
        }

        Assert.Equal(replies, transport.Poll(new QueueIndex(1)));
        Assert.Equal(replies, sink.Quiet);
        Assert.Equal(0, sink.Loud);
        // One interrupt decision for the whole batch, after its last reply; none for a poll that found nothing.
        Assert.Equal([replies], sink.NotifiedAfter);
        Assert.Equal(0, transport.Poll(new QueueIndex(1)));
        Assert.Equal([replies], sink.NotifiedAfter);
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }
}
