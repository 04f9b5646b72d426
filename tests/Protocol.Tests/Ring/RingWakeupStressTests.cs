using Hypervisor.Interop;
using Hypervisor.Protocol.Ring;
using Hypervisor.Protocol.Share;
using static Hypervisor.Protocol.Tests.Ring.RingTestSupport;

namespace Hypervisor.Protocol.Tests.Ring;

/// <summary>
/// No wake-up is ever lost: a doorbell is skipped whenever the peer's waiting flag is clear, so a flag read before
/// the peer set it, with the peer's re-check missing the frame or space, would leave the peer asleep for good. These
/// tests drive both ends of both rings of a queue, every wait going to sleep at once (no spin), with all threads on
/// one CPU (a thread is preempted between any two of its steps) and on every CPU (the ends race truly at once), and
/// bound every wait: a lost wake-up fails the test as a timeout instead of hanging it.
/// </summary>
public class RingWakeupStressTests
{
    private const int Frames = 60_000;
    private static readonly TimeSpan WaitBound = TimeSpan.FromSeconds(20);

    [Theory]
    [InlineData(true, true)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(false, false)]
    public void RequestAndReply_NoWakeupIsLost(bool consumerUsesOwnLoop, bool oneCpu)
    {
        // Small rings, so the producers also wait for space (the other flag) again and again.
        var (creator, attacher) = Pair(queues: 1, maxFrame: 512, directionBytes: 4096);
        using var c = creator;
        using var a = attacher;
        creator.SpinDuration = TimeSpan.Zero;
        attacher.SpinDuration = TimeSpan.Zero;
        // On one CPU every thread is preempted between any two steps; on all of them, the ends race truly at once.
        int cpu = oneCpu ? QueueCpus.AllowedCpus()[0] : -1;
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var submitter = new Thread(() => Guard(failures, cpu, () => Submit(creator.GetQueue(0).Producer)));
        var server = new Thread(() => Guard(failures, cpu, () => Serve(attacher.GetQueue(0))));
        var collector = new Thread(() => Guard(failures, cpu, () => Collect(creator.GetQueue(0).Consumer, consumerUsesOwnLoop)));
        submitter.Start();
        server.Start();
        collector.Start();
        // Every wait is bounded, so the threads end; the joins are bounded too in case one is stuck elsewhere.
        Assert.True(collector.Join(TimeSpan.FromMinutes(3)), "the reply collector did not finish");
        Assert.True(server.Join(TimeSpan.FromSeconds(30)), "the server did not finish");
        Assert.True(submitter.Join(TimeSpan.FromSeconds(30)), "the submitter did not finish");
        Assert.Empty(failures);
    }

    private static void Guard(System.Collections.Concurrent.ConcurrentQueue<string> failures, int cpu, Action body)
    {
        try
        {
            if (cpu >= 0) Assert.True(QueueCpus.TryPinCurrentThread(cpu, out int errno), $"cannot pin to CPU {cpu} (errno {errno})");
            body();
        }
        catch (Exception e)
        {
            failures.Enqueue(e.Message);
        }
    }

    /// <summary>Submits every frame; batches of varying size are announced once, by Flush, as the vdev does.</summary>
    private static void Submit(RingProducer producer)
    {
        for (int i = 0; i < Frames; i++)
        {
            int length = 8 + i % 300;
            var status = producer.Reserve(length, out var span, WaitBound);
            if (status != RingStatus.Ok) throw new InvalidOperationException($"submission {i}: Reserve returned {status} (a lost wake-up of the producer)");
            Fill(span, (ulong)i);
            bool last = i % 7 == 6 || i == Frames - 1;
            producer.Commit(length, (ulong)i, notify: last && i % 2 == 0);
            if (last) producer.Flush();
        }
    }

    /// <summary>Answers every frame with one reply carrying its tag; replies are announced when the queue runs dry, as the daemon does.</summary>
    private static void Serve(RingQueue queue)
    {
        for (int i = 0; i < Frames; i++)
        {
            var status = queue.Consumer.TryPeek(out var frame);
            if (status == RingStatus.WouldBlock)
            {
                queue.Producer.Flush();
                status = queue.Consumer.Peek(out frame, WaitBound);
            }
            if (status != RingStatus.Ok) throw new InvalidOperationException($"request {i}: Peek returned {status} (a lost wake-up of the consumer)");
            if (frame.Tag != (ulong)i || FirstMismatch(frame.Data, (ulong)i) >= 0) throw new InvalidOperationException($"request {i} arrived as tag {frame.Tag} or with other bytes");
            int length = frame.Data.Length;
            status = queue.Producer.Reserve(length, out var reply, WaitBound);
            if (status != RingStatus.Ok) throw new InvalidOperationException($"reply {i}: Reserve returned {status} (a lost wake-up of the producer)");
            frame.Data.CopyTo(reply);
            queue.Consumer.Release();
            queue.Producer.Commit(length, (ulong)i, notify: false);
        }
        queue.Producer.Flush();
    }

    /// <summary>Takes every reply, either with Peek or in its own poll loop on the doorbell (as the vdev's worker does).</summary>
    private static void Collect(RingConsumer consumer, bool ownLoop)
    {
        Span<PollFd> fds = stackalloc PollFd[1];
        for (int i = 0; i < Frames; i++)
        {
            RingStatus status = consumer.TryPeek(out var frame);
            if (status == RingStatus.WouldBlock)
            {
                if (ownLoop)
                {
                    while (consumer.ArmWakeup())
                    {
                        fds[0] = new PollFd { Fd = consumer.DoorbellFd, Events = Libc.POLLIN };
                        int n = Libc.poll(fds, 1, (int)WaitBound.TotalMilliseconds);
                        consumer.DisarmWakeup(rang: n > 0);
                        if (n == 0) throw new InvalidOperationException($"reply {i}: no doorbell within {WaitBound.TotalSeconds} s (a lost wake-up of an armed consumer)");
                        if (consumer.TryPeek(out _) != RingStatus.WouldBlock) break;
                    }
                    status = consumer.TryPeek(out frame);
                }
                else status = consumer.Peek(out frame, WaitBound);
            }
            if (status != RingStatus.Ok) throw new InvalidOperationException($"reply {i}: {status} (a lost wake-up of the consumer)");
            if (frame.Tag != (ulong)i || FirstMismatch(frame.Data, (ulong)i) >= 0) throw new InvalidOperationException($"reply {i} arrived as tag {frame.Tag} or with other bytes");
            consumer.Release();
        }
    }
}
