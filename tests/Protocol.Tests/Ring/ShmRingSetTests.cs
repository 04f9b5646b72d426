using System.Diagnostics;
using Hypervisor.Interop;
using Hypervisor.Protocol.Ring;
using static Hypervisor.Protocol.Tests.Ring.RingTestSupport;

namespace Hypervisor.Protocol.Tests.Ring;

public unsafe class ShmRingSetTests
{
    [Fact]
    public void Create_RejectsImpossibleGeometryWithAReason()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ShmRingSet.Create(0));
        Assert.Contains("between 1 and 64 queues", e.Message);
        e = Assert.Throws<ArgumentOutOfRangeException>(() => ShmRingSet.Create(1, 1 << 20, directionBytes: 1 << 20));
        Assert.Contains("power of two of at least", e.Message);
        e = Assert.Throws<ArgumentOutOfRangeException>(() => ShmRingSet.Create(1, 1000, directionBytes: 5000));
        Assert.Contains("power of two", e.Message);
    }

    [Fact]
    public void Create_DefaultGeometryHoldsTwoLargestFramesPerRing()
    {
        using var set = ShmRingSet.Create(2);
        Assert.Equal(RingRole.Creator, set.Role);
        Assert.Equal(2, set.QueueCount);
        Assert.Equal((1 << 20) + 4096, set.MaxFrameSize);
        Assert.Equal(4L << 20, set.DirectionBytes);
        Assert.Equal(0, set.PeerPid); // nobody attached yet
        Assert.Equal(2, set.Fds.QueueCount);
        // Close-on-exec by default, so unrelated children never inherit the ring.
        Assert.Equal(Libc.FD_CLOEXEC, Libc.fcntl(set.Fds.MemFd, Libc.F_GETFD, 0));
        set.SetInheritable(true);
        foreach (int fd in set.Fds.Doorbells.Append(set.Fds.MemFd)) Assert.Equal(0, Libc.fcntl(fd, Libc.F_GETFD, 0));
        Assert.Equal(8, set.Fds.Doorbells.Count);
        set.SetInheritable(false);
        foreach (int fd in set.Fds.Doorbells) Assert.Equal(Libc.FD_CLOEXEC, Libc.fcntl(fd, Libc.F_GETFD, 0));
    }

    [Fact]
    public void Attach_RejectsDescriptorsThatAreNotOpen()
    {
        var e = Assert.Throws<IOException>(() => ShmRingSet.Attach("memfd=900,queues=1,sq0=901,sqf0=902,cq0=903,cqf0=904"));
        Assert.Contains("memfd=900 is not open in this process", e.Message);
    }

    [Fact]
    public void Attach_RejectsAMemfdThatIsNotARingSet()
    {
        using var creator = ShmRingSet.Create(1, 1000, 4096);
        var fds = creator.Fds;
        // Right size and seals, wrong magic.
        *(ulong*)creator.BaseForTests = 0x1234;
        var e = Assert.Throws<InvalidDataException>(() => ShmRingSet.Attach(DupAll(fds)));
        Assert.Contains("bad magic", e.Message);
        *(ulong*)creator.BaseForTests = RingLayout.Magic;
        // A lying geometry.
        *(ulong*)(creator.BaseForTests + RingLayout.OffDirectionBytes) = 1 << 30;
        e = Assert.Throws<InvalidDataException>(() => ShmRingSet.Attach(DupAll(fds)));
        Assert.Contains("impossible geometry", e.Message);
        // A descriptor string naming another queue count.
        *(ulong*)(creator.BaseForTests + RingLayout.OffDirectionBytes) = 4096;
        e = Assert.Throws<InvalidDataException>(() => ShmRingSet.Attach(new RingFds(Dup(fds.MemFd), DupAll(fds).Doorbells.Concat(new[] { 0, 1, 2, 0 }).ToArray())));
        Assert.Contains("has 1 queues but the descriptor names 2", e.Message);
    }

    [Fact]
    public void Attach_RefusesASecondAttach()
    {
        var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
        using (creator) using (attacher)
        {
            var e = Assert.Throws<InvalidDataException>(() => ShmRingSet.Attach(DupAll(creator.Fds)));
            Assert.Contains($"already attached by pid {Environment.ProcessId}", e.Message);
        }
    }

    [Fact]
    public void PeerExitFd_IsUnknownBeforeAttachAndThenWatchesThePeer()
    {
        using var creator = ShmRingSet.Create(1, 1000, 4096);
        Assert.Equal(-1, creator.PeerExitFd);
        using var attacher = ShmRingSet.Attach(DupAll(creator.Fds));
        Assert.True(creator.PeerExitFd >= 0);
        Assert.True(attacher.PeerExitFd >= 0);
        // This process is its own peer here and alive: the pidfd is not readable.
        PollFd p = new() { Fd = creator.PeerExitFd, Events = Libc.POLLIN };
        Assert.Equal(0, Libc.poll(new Span<PollFd>(ref p), 1, 0));
    }

    [Fact]
    public void Attach_RejectsAnUnsealedFile()
    {
        int fd = Libc.memfd_create("not-a-ring", Libc.MFD_CLOEXEC);
        Assert.True(Libc.ftruncate(fd, 1 << 20) == 0);
        try
        {
            var e = Assert.Throws<InvalidDataException>(() => ShmRingSet.Attach(new RingFds(fd, new[] { 0, 1, 2, 0 })));
            Assert.Contains("not a memfd sealed against shrinking", e.Message);
        }
        finally
        {
            Libc.close(fd);
        }
    }

    [Fact]
    public void ManyFramesInFlightOnSeveralQueuesArriveIntactInOrder()
    {
        const int Queues = 4;
        const int FramesPerQueue = 3000;
        var (creator, attacher) = Pair(Queues, maxFrame: 64 * 1024, directionBytes: 256 * 1024);
        using (creator) using (attacher)
        {
            var workers = new List<Worker>();
            for (int q = 0; q < Queues; q++)
            {
                var vdev = creator.GetQueue(q);
                var daemon = attacher.GetQueue(q);
                int queue = q;
                // Lengths from 0 to 64 KiB, with a bias to small frames like FUSE's.
                static int LengthOf(int queue, int i) => (i * 7919 + queue * 131) % 11 == 0 ? (i * 2654435761u % (64 * 1024 + 1)) is var big ? (int)big : 0 : (i * 37 + queue) % 300;
                static ulong Seed(int queue, int i) => ((ulong)queue << 32) | (uint)i;
                workers.Add(Worker.Start(() =>
                {
                    for (int i = 0; i < FramesPerQueue; i++) Send(vdev.Producer, LengthOf(queue, i), Seed(queue, i), Seed(queue, i));
                }));
                workers.Add(Worker.Start(() =>
                {
                    for (int i = 0; i < FramesPerQueue; i++)
                    {
                        Assert.Equal(RingStatus.Ok, daemon.Consumer.Peek(out var request, TimeSpan.FromSeconds(10)));
                        Assert.Equal(Seed(queue, i), request.Tag);
                        Assert.Equal(LengthOf(queue, i), request.Data.Length);
                        Assert.Equal(-1, FirstMismatch(request.Data, Seed(queue, i)));
                        // The reply is written straight into the completion ring.
                        Assert.Equal(RingStatus.Ok, daemon.Producer.Reserve(16, out var reply, TimeSpan.FromSeconds(10)));
                        BitConverter.TryWriteBytes(reply, (long)request.Data.Length);
                        BitConverter.TryWriteBytes(reply[8..], ~request.Tag);
                        daemon.Producer.Commit(16, request.Tag);
                        daemon.Consumer.Release();
                    }
                }));
                workers.Add(Worker.Start(() =>
                {
                    for (int i = 0; i < FramesPerQueue; i++)
                    {
                        Assert.Equal(RingStatus.Ok, vdev.Consumer.Peek(out var reply, TimeSpan.FromSeconds(10)));
                        Assert.Equal(Seed(queue, i), reply.Tag);
                        Assert.Equal(LengthOf(queue, i), BitConverter.ToInt64(reply.Data));
                        Assert.Equal(~Seed(queue, i), BitConverter.ToUInt64(reply.Data[8..]));
                        vdev.Consumer.Release();
                    }
                }));
            }
            Worker.JoinAll(workers);
        }
    }

    [Fact]
    public void ChildProcessAttachesFromInheritedDescriptorsAndServesEveryQueue()
    {
        using var creator = ShmRingSet.Create(2, maxFrameSize: 256 * 1024);
        using var child = StartPeer(creator, "echo");
        try
        {
            // Replies are read while requests are still being sent: the rings hold only a few
            // 256 KiB frames, so a sender that waited for all replies at the end would deadlock.
            var readers = new List<Worker>();
            for (int q = 0; q < 2; q++)
            {
                var queue = creator.GetQueue(q);
                int queueIndex = q;
                readers.Add(Worker.Start(() =>
                {
                    for (int i = 0; i < 50; i++)
                    {
                        ulong seed = (ulong)(queueIndex * 1000 + i);
                        var status = queue.Consumer.Peek(out var reply, TimeSpan.FromSeconds(30));
                        Assert.True(status == RingStatus.Ok, $"queue {queueIndex} frame {i}: {status}");
                        Assert.Equal(seed, reply.Tag);
                        Assert.Equal(i % 5 == 0 ? 256 * 1024 : 1 + i * 3, reply.Data.Length);
                        // The child echoes every byte plus one.
                        var expected = new byte[reply.Data.Length];
                        Fill(expected, seed);
                        for (int b = 0; b < expected.Length; b++) Assert.Equal((byte)(expected[b] + 1), reply.Data[b]);
                        queue.Consumer.Release();
                    }
                }));
            }
            for (int i = 0; i < 50; i++)
            {
                for (int q = 0; q < 2; q++)
                {
                    ulong seed = (ulong)(q * 1000 + i);
                    Send(creator.GetQueue(q).Producer, i % 5 == 0 ? 256 * 1024 : 1 + i * 3, seed, seed);
                }
            }
            Worker.JoinAll(readers);
            Assert.Equal(child.Id, creator.PeerPid);
            // Orderly shutdown: the child sees Closed on every queue and exits 0.
            creator.Close();
            Assert.True(child.WaitForExit(10_000), "the peer did not exit after the ring was closed");
            Assert.Equal(0, child.ExitCode);
        }
        finally
        {
            if (!child.HasExited) child.Kill();
        }
    }

    [Fact]
    public void KilledPeerIsDetectedPromptlyByAWaitingConsumerAndProducer()
    {
        using var creator = ShmRingSet.Create(1, maxFrameSize: 4096, directionBytes: 16384);
        using var child = StartPeer(creator, "echo");
        try
        {
            var queue = creator.GetQueue(0);
            Send(queue.Producer, 10, 1, 1);
            Assert.Equal(RingStatus.Ok, queue.Consumer.Peek(out _, TimeSpan.FromSeconds(30)));
            queue.Consumer.Release();
            creator.SetPeerProcess(child.Id);

            var waiter = Worker.Start(() =>
            {
                var sw = Stopwatch.StartNew();
                Assert.Equal(RingStatus.PeerDead, queue.Consumer.Peek(out _, TimeSpan.FromSeconds(30)));
                Assert.True(sw.ElapsedMilliseconds < 5000);
            });
            Thread.Sleep(200);
            var killed = Stopwatch.StartNew();
            child.Kill();
            waiter.Join();
            Assert.True(killed.ElapsedMilliseconds < 10000, $"the dead peer was noticed only after {killed.ElapsedMilliseconds} ms");

            // A producer facing a full ring of a dead peer does not hang either.
            while (queue.Producer.TryReserve(4096, out _) == RingStatus.Ok) queue.Producer.Commit(4096, 0);
            var sw = Stopwatch.StartNew();
            Assert.Equal(RingStatus.PeerDead, queue.Producer.Reserve(4096, out _, TimeSpan.FromSeconds(30)));
            Assert.True(sw.ElapsedMilliseconds < 10000); // well before the 30 s timeout: the death was noticed, not timed out
        }
        finally
        {
            if (!child.HasExited) child.Kill();
        }
    }

    [Fact]
    public void CreatorLearnsTheAttachersPidFromTheHeaderAndWatchesIt()
    {
        using var creator = ShmRingSet.Create(1, maxFrameSize: 4096, directionBytes: 16384);
        using var child = StartPeer(creator, "echo");
        try
        {
            // No SetPeerProcess: the pid comes from the header once the child attached.
            string? line = child.StandardOutput.ReadLine();
            Assert.Equal("attached " + child.Id, line);
            Assert.Equal(child.Id, creator.PeerPid);
            child.Kill();
            var sw = Stopwatch.StartNew();
            Assert.Equal(RingStatus.PeerDead, creator.GetQueue(0).Consumer.Peek(out _, TimeSpan.FromSeconds(30)));
            Assert.True(sw.ElapsedMilliseconds < 10000); // well before the 30 s timeout: the death was noticed, not timed out
        }
        finally
        {
            if (!child.HasExited) child.Kill();
        }
    }

    [Fact]
    public void AttacherLearnsPromptlyThatTheCreatorWasKilled()
    {
        using var child = StartPeer("create");
        try
        {
            var remote = RingFds.Parse(child.StandardOutput.ReadLine() ?? "");
            // Take the child's descriptors as if they had been inherited (root may pidfd_getfd).
            int pidfd = Libc.pidfd_open(child.Id, 0);
            Assert.True(pidfd >= 0);
            int Take(int fd)
            {
                int local = Libc.pidfd_getfd(pidfd, fd, 0);
                Assert.True(local >= 0, $"pidfd_getfd failed: errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()}");
                return local;
            }
            var bells = new int[remote.Doorbells.Count];
            for (int i = 0; i < bells.Length; i++) bells[i] = Take(remote.Doorbells[i]);
            using var attacher = ShmRingSet.Attach(new RingFds(Take(remote.MemFd), bells));
            Libc.close(pidfd);
            Assert.Equal(child.Id, attacher.PeerPid);

            var waiter = Worker.Start(() =>
                Assert.Equal(RingStatus.PeerDead, attacher.GetQueue(0).Consumer.Peek(out _, TimeSpan.FromSeconds(30))));
            Thread.Sleep(100);
            var killed = Stopwatch.StartNew();
            child.Kill();
            waiter.Join();
            Assert.True(killed.ElapsedMilliseconds < 10000, $"the dead creator was noticed only after {killed.ElapsedMilliseconds} ms");
        }
        finally
        {
            if (!child.HasExited) child.Kill();
        }
    }

    [Fact]
    public void ArmWakeup_LetsAnEventLoopSleepOnTheDoorbellWithoutLosingACommit()
    {
        var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
        using (creator) using (attacher)
        {
            var consumer = creator.GetQueue(0).Consumer;   // the vdev's completion ring
            var producer = attacher.GetQueue(0).Producer;  // the daemon's end of it
            for (int round = 0; round < 200; round++)
            {
                Assert.True(consumer.ArmWakeup());
                var writer = Worker.Start(() => Send(producer, 8, (ulong)round, 1));
                // Sleep on the raw descriptor, as an epoll loop would.
                PollFd p = new() { Fd = consumer.DoorbellFd, Events = Libc.POLLIN };
                Assert.Equal(1, Libc.poll(new Span<PollFd>(ref p), 1, 10_000));
                consumer.DisarmWakeup();
                writer.Join();
                Assert.Equal(RingStatus.Ok, consumer.TryPeek(out var frame));
                Assert.Equal((ulong)round, frame.Tag);
                consumer.Release();
            }
            // With a frame already there, arming refuses so that the loop does not sleep on it.
            Send(producer, 8, 1, 1);
            Assert.False(consumer.ArmWakeup());

            // The producer side: a full ring arms, a release rings the freed bell.
            var sq = creator.GetQueue(0).Producer;
            while (sq.TryReserve(1000, out _) == RingStatus.Ok) sq.Commit(1000, 0);
            Assert.True(sq.ArmWakeup(1000));
            Assert.Equal(RingStatus.Ok, attacher.GetQueue(0).Consumer.TryPeek(out _));
            attacher.GetQueue(0).Consumer.Release();
            PollFd q = new() { Fd = sq.DoorbellFd, Events = Libc.POLLIN };
            Assert.Equal(1, Libc.poll(new Span<PollFd>(ref q), 1, 10_000));
            sq.DisarmWakeup();
            Assert.Equal(RingStatus.Ok, sq.TryReserve(1000, out _));
        }
    }

    [Fact]
    public void Dispose_WakesThisProcesssWaitersWithClosedBeforeUnmapping()
    {
        var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
        using (attacher)
        {
            var statuses = new RingStatus[2];
            var consumer = Worker.Start(() => statuses[0] = creator.GetQueue(0).Consumer.Peek(out _, Timeout.InfiniteTimeSpan));
            var sq = creator.GetQueue(0).Producer;
            while (sq.TryReserve(1000, out _) == RingStatus.Ok) sq.Commit(1000, 0);
            var producer = Worker.Start(() => statuses[1] = sq.Reserve(1000, out _, Timeout.InfiniteTimeSpan));
            Thread.Sleep(200);
            var sw = Stopwatch.StartNew();
            creator.Dispose();
            Worker.JoinAll(new[] { consumer, producer });
            Assert.Equal(new[] { RingStatus.Closed, RingStatus.Closed }, statuses);
            Assert.True(sw.ElapsedMilliseconds < 10000);
            Assert.Throws<ObjectDisposedException>(() => sq.TryReserve(1, out _));
            Assert.Equal(RingStatus.Closed, attacher.GetQueue(0).Producer.TryReserve(1, out _)); // the attacher sees the close
        }
    }

    [Fact]
    public void StreamingWithoutSpinningNeverLosesAWakeUp()
    {
        // Every wait goes to sleep at once, so each of these round trips exercises the arm,
        // re-check and doorbell path on both rings; a lost wake-up hangs a side for 10 s.
        var (creator, attacher) = Pair(2, maxFrame: 1000, directionBytes: 4096);
        using (creator) using (attacher)
        {
            creator.SpinDuration = attacher.SpinDuration = TimeSpan.Zero;
            var workers = new List<Worker>();
            for (int q = 0; q < 2; q++)
            {
                var vdev = creator.GetQueue(q);
                var daemon = attacher.GetQueue(q);
                workers.Add(Worker.Start(() =>
                {
                    for (ulong i = 0; i < 5000; i++)
                    {
                        Assert.Equal(RingStatus.Ok, daemon.Consumer.Peek(out var request, TimeSpan.FromSeconds(10)));
                        Assert.Equal(i, request.Tag);
                        Assert.Equal(RingStatus.Ok, daemon.Producer.Reserve(16, out _, TimeSpan.FromSeconds(10)));
                        daemon.Producer.Commit(16, request.Tag);
                        daemon.Consumer.Release();
                    }
                }));
                workers.Add(Worker.Start(() =>
                {
                    for (ulong i = 0; i < 5000; i++)
                    {
                        // Frames up to 900 bytes in a 4 KiB ring: the producer also sleeps on a full ring.
                        Send(vdev.Producer, (int)(i % 7) * 150, i, i);
                    }
                }));
                workers.Add(Worker.Start(() =>
                {
                    for (ulong i = 0; i < 5000; i++)
                    {
                        Assert.Equal(RingStatus.Ok, vdev.Consumer.Peek(out var reply, TimeSpan.FromSeconds(10)));
                        Assert.Equal(i, reply.Tag);
                        vdev.Consumer.Release();
                    }
                }));
            }
            Worker.JoinAll(workers);
        }
    }
}
