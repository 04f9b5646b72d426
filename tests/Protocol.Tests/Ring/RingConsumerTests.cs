using System.Diagnostics;
using Hypervisor.Protocol.Ring;
using static Hypervisor.Protocol.Tests.Ring.RingTestSupport;

namespace Hypervisor.Protocol.Tests.Ring;

public unsafe class RingConsumerTests
{
    [Fact]
    public void TryPeek_OnAnEmptyRingWouldBlockAndPeekingTwiceReturnsTheSameFrame()
    {
        var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
        using (creator) using (attacher)
        {
            var consumer = attacher.GetQueue(0).Consumer;
            Assert.Equal(RingStatus.WouldBlock, consumer.TryPeek(out var none));
            Assert.Equal(0, none.Data.Length);
            Assert.Throws<InvalidOperationException>(() => consumer.Release());

            Send(creator.GetQueue(0).Producer, 5, 77, 3);
            Assert.Equal(RingStatus.Ok, consumer.TryPeek(out var a));
            Assert.Equal(RingStatus.Ok, consumer.TryPeek(out var b));
            Assert.Equal(77UL, a.Tag);
            Assert.Equal(77UL, b.Tag);
            Assert.True(a.Data == b.Data);
            consumer.Release();
            Assert.Equal(RingStatus.WouldBlock, consumer.TryPeek(out _));
        }
    }

    [Fact]
    public void FramesOfEveryLengthSurviveManyWrapArounds()
    {
        var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
        using (creator) using (attacher)
        {
            var producer = creator.GetQueue(0).Producer;
            var consumer = attacher.GetQueue(0).Consumer;
            var rng = new Random(1234);
            ulong sent = 0, received = 0;
            var lengths = new Queue<int>();
            long bytes = 0;
            // Alternate bursts of different depth so that the pad lands at every offset.
            for (int round = 0; round < 3000; round++)
            {
                int burst = rng.Next(1, 6);
                for (int i = 0; i < burst; i++)
                {
                    int length = rng.Next(0, 1001);
                    if (producer.TryReserve(length, out var span) != RingStatus.Ok) break;
                    Fill(span, sent);
                    producer.Commit(length, sent);
                    lengths.Enqueue(length);
                    sent++;
                    bytes += length;
                }
                int take = rng.Next(1, 6);
                for (int i = 0; i < take && consumer.TryPeek(out var frame) == RingStatus.Ok; i++)
                {
                    Assert.Equal(received, frame.Tag);
                    Assert.Equal(lengths.Dequeue(), frame.Data.Length);
                    Assert.Equal(-1, FirstMismatch(frame.Data, received));
                    consumer.Release();
                    received++;
                }
            }
            while (consumer.TryPeek(out var frame) == RingStatus.Ok)
            {
                Assert.Equal(received, frame.Tag);
                Assert.Equal(-1, FirstMismatch(frame.Data, received));
                consumer.Release();
                received++;
            }
            Assert.Equal(sent, received);
            Assert.True(bytes > 100 * 4096, $"only {bytes} bytes went through; the test must wrap many times");
        }
    }

    [Fact]
    public void Peek_TimesOutOnAnEmptyRing()
    {
        var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
        using (creator) using (attacher)
        {
            var sw = Stopwatch.StartNew();
            Assert.Equal(RingStatus.Timeout, attacher.GetQueue(0).Consumer.Peek(out _, TimeSpan.FromMilliseconds(100)));
            Assert.InRange(sw.ElapsedMilliseconds, 90, 5000);
            Assert.Equal(RingStatus.Timeout, attacher.GetQueue(0).Consumer.Peek(out _, TimeSpan.Zero));
        }
    }

    [Fact]
    public void Peek_ReturnsCanceledWhenTheTokenIsCancelledWhileWaiting()
    {
        var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
        using (creator) using (attacher)
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(100));
            var sw = Stopwatch.StartNew();
            Assert.Equal(RingStatus.Canceled, attacher.GetQueue(0).Consumer.Peek(out _, Timeout.InfiniteTimeSpan, cts.Token));
            Assert.InRange(sw.ElapsedMilliseconds, 50, 5000);
            // The next wait, with a live token, is not cut short by the earlier cancellation.
            using var live = new CancellationTokenSource();
            sw.Restart();
            Assert.Equal(RingStatus.Timeout, attacher.GetQueue(0).Consumer.Peek(out _, TimeSpan.FromMilliseconds(100), live.Token));
            Assert.InRange(sw.ElapsedMilliseconds, 90, 5000);
            Assert.Equal(RingStatus.Canceled, attacher.GetQueue(0).Consumer.Peek(out _, TimeSpan.FromSeconds(5), cts.Token));
        }
    }

    [Fact]
    public void Peek_WithoutSpinningSleepsAtOnceWhateverTheSetsSpin()
    {
        var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
        using (creator) using (attacher)
        {
            attacher.SpinDuration = TimeSpan.FromSeconds(4); // a spin this long would outlast the timeout many times
            var consumer = attacher.GetQueue(0).Consumer;
            consumer.SpinsBeforeSleep = false;
            var sw = Stopwatch.StartNew();
            Assert.Equal(RingStatus.Timeout, consumer.Peek(out _, TimeSpan.FromMilliseconds(100)));
            Assert.InRange(sw.ElapsedMilliseconds, 90, 3900); // a spin would have taken 4 s

            // a frame committed while it sleeps still wakes it
            var writer = Worker.Start(() =>
            {
                Thread.Sleep(100);
                Send(creator.GetQueue(0).Producer, 8, 6, 6);
            });
            Assert.Equal(RingStatus.Ok, consumer.Peek(out var frame, TimeSpan.FromSeconds(10)));
            Assert.Equal(6UL, frame.Tag);
            writer.Join();
        }
    }

    [Fact]
    public void SpinCredit_EarnsOnePartInItsShareOfTheTimePassing_AndStopsTheSpinWhenItIsSpent()
    {
        var credit = new SpinCredit { Share = 4 };
        credit.Earn(now: 4000, cap: 10_000);
        // 4000 ticks passed since the start: 1000 earned, charged as the spin goes on.
        Assert.True(credit.Charge(4600));
        Assert.False(credit.Charge(5000));
        // Banked credit is capped however long the thread was away.
        credit.Earn(now: 1_000_000, cap: 300);
        Assert.True(credit.Charge(1_000_299));
        Assert.False(credit.Charge(1_000_300));
        // Without a share the spin is never stopped by the credit.
        var unlimited = new SpinCredit();
        unlimited.Earn(0, 0);
        Assert.True(unlimited.Charge(long.MaxValue));
    }

    [Fact]
    public void Peek_WakesOnTheDoorbellWhenAFrameIsCommittedWhileItSleeps()
    {
        var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
        using (creator) using (attacher)
        {
            attacher.SpinDuration = TimeSpan.Zero;
            var consumer = attacher.GetQueue(0).Consumer;
            var writer = Worker.Start(() =>
            {
                Thread.Sleep(100);
                Send(creator.GetQueue(0).Producer, 8, 5, 5);
            });
            var sw = Stopwatch.StartNew();
            Assert.Equal(RingStatus.Ok, consumer.Peek(out var frame, TimeSpan.FromSeconds(10)));
            Assert.Equal(5UL, frame.Tag);
            Assert.InRange(sw.ElapsedMilliseconds, 50, 5000);
            writer.Join();
        }
    }

    [Fact]
    public void Peek_DeliversCommittedFramesBeforeReportingThePeersClose()
    {
        var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
        using (creator) using (attacher)
        {
            var consumer = attacher.GetQueue(0).Consumer;
            Send(creator.GetQueue(0).Producer, 8, 1, 1);
            creator.Close();
            Assert.Equal(RingStatus.Closed, attacher.GetQueue(0).Producer.TryReserve(8, out _));
            Assert.Equal(RingStatus.Closed, creator.GetQueue(0).Producer.TryReserve(8, out _));
            Assert.Equal(RingStatus.Ok, consumer.Peek(out var frame, TimeSpan.FromSeconds(1)));
            Assert.Equal(1UL, frame.Tag);
            consumer.Release();
            Assert.Equal(RingStatus.Closed, consumer.Peek(out _, TimeSpan.FromSeconds(1)));
        }
    }

    [Fact]
    public void Peek_SleepingConsumerLearnsOfThePeersClosePromptly()
    {
        var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
        using (creator) using (attacher)
        {
            var closer = Worker.Start(() => { Thread.Sleep(100); attacher.Close(); });
            var sw = Stopwatch.StartNew();
            Assert.Equal(RingStatus.Closed, creator.GetQueue(0).Consumer.Peek(out _, TimeSpan.FromSeconds(10)));
            Assert.InRange(sw.ElapsedMilliseconds, 50, 8000); // the close, not the 10 s timeout
            closer.Join();
        }
    }

    private static ulong* Tail(ShmRingSet set) => (ulong*)(set.BaseForTests + RingLayout.ControlOffset(0, RingLayout.Submission) + RingLayout.OffTail);

    private static byte* Record(ShmRingSet set, long offset) => set.BaseForTests + RingLayout.DataOffset(1, set.DirectionBytes, 0, RingLayout.Submission) + offset;

    [Theory]
    [InlineData("tail beyond capacity")]
    [InlineData("tail backwards")]
    [InlineData("tail misaligned")]
    [InlineData("length beyond max frame")]
    [InlineData("length beyond tail")]
    [InlineData("wrong position check")]
    [InlineData("pad of the wrong size")]
    public void TryPeek_MarksTheRingBrokenWhenSharedIndicesOrHeadersLie(string lie)
    {
        var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
        using (creator) using (attacher)
        {
            var consumer = attacher.GetQueue(0).Consumer;
            Send(creator.GetQueue(0).Producer, 100, 1, 1); // record 0..191
            Assert.Equal(RingStatus.Ok, consumer.TryPeek(out _));
            consumer.Release();
            Send(creator.GetQueue(0).Producer, 100, 2, 2); // record 192..383
            switch (lie)
            {
                case "tail beyond capacity": *Tail(creator) = 192 + 4096 + 64; break;
                case "tail backwards": *Tail(creator) = 128; break;
                case "tail misaligned": *Tail(creator) = 200; break;
                case "length beyond max frame": *(uint*)(Record(creator, 192) + RingLayout.OffRecLength) = 1001; break;
                case "length beyond tail": *(uint*)(Record(creator, 192) + RingLayout.OffRecLength) = 300; break;
                case "wrong position check": *(uint*)(Record(creator, 192) + RingLayout.OffRecCheck) = 0; break;
                case "pad of the wrong size": *(uint*)(Record(creator, 192) + RingLayout.OffRecFlags) = (uint)RingRecordFlags.Pad; break;
            }
            Assert.Equal(RingStatus.Broken, consumer.TryPeek(out var frame));
            Assert.Equal(0, frame.Data.Length);
            Assert.True(consumer.IsBroken);
            Assert.Equal(RingStatus.Broken, consumer.Peek(out _, TimeSpan.FromSeconds(1)));
            // Other rings of the set keep working.
            Send(attacher.GetQueue(0).Producer, 10, 9, 9);
            Assert.Equal(RingStatus.Ok, creator.GetQueue(0).Consumer.TryPeek(out var reply));
            Assert.Equal(9UL, reply.Tag);
        }
    }

    [Theory]
    [InlineData(RingLayout.OffRecFlags, (uint)RingRecordFlags.GuestMemory | 0x4u)]
    [InlineData(RingLayout.OffRecFlags, 0x80u)]
    [InlineData(RingLayout.OffRecReserved1, 1u)]
    [InlineData(RingLayout.OffRecReserved2, 1u)]
    public void TryPeek_ReportsAWellFramedRecordWithUnknownFieldsAsInvalidAndSkipsIt(int field, uint value)
    {
        var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
        using (creator) using (attacher)
        {
            var consumer = attacher.GetQueue(0).Consumer;
            Send(creator.GetQueue(0).Producer, 100, 11, 1);
            Send(creator.GetQueue(0).Producer, 50, 12, 2);
            *(uint*)(Record(creator, 0) + field) = value;
            Assert.Equal(RingStatus.InvalidFrame, consumer.TryPeek(out var bad));
            Assert.Equal(11UL, bad.Tag);
            Assert.Equal(0, bad.Data.Length);
            consumer.Release();
            Assert.Equal(RingStatus.Ok, consumer.TryPeek(out var good));
            Assert.Equal(12UL, good.Tag);
            Assert.Equal(-1, FirstMismatch(good.Data, 2));
        }
    }

    [Fact]
    public void RandomCorruptionOfTheSharedMemoryIsReportedAndNeverCrashes()
    {
        var rng = new Random(99);
        int broken = 0, invalid = 0, ok = 0;
        for (int iteration = 0; iteration < 3000; iteration++)
        {
            var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
            using (creator) using (attacher)
            {
                var producer = creator.GetQueue(0).Producer;
                var consumer = attacher.GetQueue(0).Consumer;
                byte* control = creator.BaseForTests + RingLayout.ControlOffset(0, RingLayout.Submission);
                byte* data = Record(creator, 0);
                for (int step = 0; step < 20; step++)
                {
                    for (int i = rng.Next(4); i > 0; i--)
                    {
                        int length = rng.Next(0, 1001);
                        if (producer.TryReserve(length, out var span) != RingStatus.Ok) break;
                        span.Fill(0xAB);
                        producer.Commit(length, (ulong)step);
                    }
                    // Scribble over the indices, flags or record headers the way a broken peer would.
                    int writes = rng.Next(3);
                    for (int i = 0; i < writes; i++)
                    {
                        if (rng.Next(4) == 0)
                            control[rng.Next(RingLayout.ControlBlockSize)] = (byte)rng.Next(256);
                        else
                            data[rng.Next(4096)] = (byte)rng.Next(256);
                    }
                    for (int i = rng.Next(5); i > 0; i--)
                    {
                        var status = consumer.TryPeek(out var frame);
                        if (status == RingStatus.Ok)
                        {
                            ok++;
                            Assert.InRange(frame.Data.Length, 0, 1000);
                            consumer.Release();
                        }
                        else if (status == RingStatus.InvalidFrame)
                        {
                            invalid++;
                            consumer.Release();
                        }
                        else if (status == RingStatus.Broken)
                        {
                            broken++;
                            break;
                        }
                        else
                        {
                            Assert.Equal(RingStatus.WouldBlock, status);
                            break;
                        }
                    }
                    if (consumer.IsBroken) break;
                }
            }
        }
        Assert.True(broken > 100, $"only {broken} rings were reported broken");
        Assert.True(invalid > 10, $"only {invalid} frames were reported invalid");
        Assert.True(ok > 1000, $"only {ok} frames got through");
    }

    [Fact]
    public void ConcurrentCorruptionWhileBothSidesRunIsSurvived()
    {
        int brokenRings = 0;
        var deadline = Stopwatch.StartNew();
        var rng = new Random(7);
        while (deadline.ElapsedMilliseconds < 1500)
        {
            var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
            using (creator) using (attacher)
            {
                creator.SpinDuration = attacher.SpinDuration = TimeSpan.FromMicroseconds(5);
                var producer = creator.GetQueue(0).Producer;
                var consumer = attacher.GetQueue(0).Consumer;
                using var stop = new CancellationTokenSource();
                var writer = Worker.Start(() =>
                {
                    for (ulong n = 0; !stop.IsCancellationRequested; n++)
                    {
                        var s = producer.Reserve((int)(n % 1001), out var span, TimeSpan.FromMilliseconds(20), stop.Token);
                        if (s == RingStatus.Broken) return;
                        if (s != RingStatus.Ok) continue;
                        span.Fill((byte)n);
                        producer.Commit(span.Length, n);
                    }
                });
                var reader = Worker.Start(() =>
                {
                    while (!stop.IsCancellationRequested)
                    {
                        var s = consumer.Peek(out var frame, TimeSpan.FromMilliseconds(20), stop.Token);
                        if (s == RingStatus.Broken) return;
                        if (s is RingStatus.Ok or RingStatus.InvalidFrame)
                        {
                            Assert.InRange(frame.Data.Length, 0, 1000);
                            consumer.Release();
                        }
                    }
                });
                byte* control = creator.BaseForTests + RingLayout.ControlOffset(0, RingLayout.Submission);
                byte* data = Record(creator, 0);
                var run = Stopwatch.StartNew();
                while (run.ElapsedMilliseconds < 50 && !consumer.IsBroken)
                {
                    Thread.SpinWait(200);
                    if (rng.Next(8) == 0) control[rng.Next(RingLayout.ControlBlockSize)] = (byte)rng.Next(256);
                    else data[rng.Next(4096)] = (byte)rng.Next(256);
                }
                stop.Cancel();
                Worker.JoinAll(new[] { writer, reader });
                if (consumer.IsBroken || producer.IsBroken) brokenRings++;
            }
        }
        Assert.True(brokenRings > 0, "concurrent corruption never broke a ring; the test did not exercise validation");
    }
}
