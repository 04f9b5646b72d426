using Hypervisor.Protocol.Ring;
using static Hypervisor.Protocol.Tests.Ring.RingTestSupport;

namespace Hypervisor.Protocol.Tests.Ring;

public unsafe class RingProducerTests
{
    [Fact]
    public void TryReserve_FillsTheRingThenWouldBlockUntilTheConsumerReleases()
    {
        var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
        using (creator) using (attacher)
        {
            var producer = creator.GetQueue(0).Producer;
            var consumer = attacher.GetQueue(0).Consumer;
            // 96-byte frames occupy 128 bytes each: exactly 32 fit in 4096 bytes.
            int sent = 0;
            while (producer.TryReserve(96, out var span) == RingStatus.Ok)
            {
                Fill(span, (ulong)sent);
                producer.Commit(96, (ulong)sent);
                sent++;
                Assert.True(sent <= 32);
            }
            Assert.Equal(32, sent);
            Assert.Equal(RingStatus.WouldBlock, producer.TryReserve(1, out _));

            Assert.Equal(RingStatus.Ok, consumer.TryPeek(out var frame));
            Assert.Equal(0UL, frame.Tag);
            consumer.Release();
            Assert.Equal(RingStatus.Ok, producer.TryReserve(96, out _));
            Assert.Equal(RingStatus.WouldBlock, producer.TryReserve(97, out _));
        }
    }

    [Fact]
    public void Reserve_MaxFrameSucceedsAndOneByteMoreIsTooLarge()
    {
        var (creator, attacher) = Pair(1);
        using (creator) using (attacher)
        {
            var producer = creator.GetQueue(0).Producer;
            var consumer = attacher.GetQueue(0).Consumer;
            Assert.Equal(RingLayout.DefaultMaxFrameSize, producer.MaxFrameSize);
            Assert.Equal(RingStatus.TooLarge, producer.TryReserve(RingLayout.DefaultMaxFrameSize + 1, out _));
            Assert.Equal(RingStatus.TooLarge, producer.Reserve(int.MaxValue, out _, TimeSpan.Zero));
            Assert.Equal(RingStatus.TooLarge, producer.TryReserve(-1, out _));

            // Ten largest frames through a ring that holds two at a time, every byte checked.
            var reader = Worker.Start(() =>
            {
                for (ulong i = 0; i < 10; i++)
                {
                    Assert.Equal(RingStatus.Ok, consumer.Peek(out var frame, TimeSpan.FromSeconds(10)));
                    Assert.Equal(i, frame.Tag);
                    Assert.Equal(RingLayout.DefaultMaxFrameSize, frame.Data.Length);
                    Assert.Equal(-1, FirstMismatch(frame.Data, i));
                    consumer.Release();
                }
            });
            for (ulong i = 0; i < 10; i++) Send(producer, RingLayout.DefaultMaxFrameSize, i, i);
            reader.Join();
        }
    }

    [Fact]
    public void Commit_MayPublishFewerBytesThanReserved()
    {
        var (creator, attacher) = Pair(1, maxFrame: 4096, directionBytes: 16384);
        using (creator) using (attacher)
        {
            var producer = creator.GetQueue(0).Producer;
            Assert.Equal(RingStatus.Ok, producer.TryReserve(4096, out var span));
            Fill(span[..10], 7);
            producer.Commit(10, 42);
            Assert.Throws<InvalidOperationException>(() => producer.Commit(10, 43));
            Assert.Equal(RingStatus.Ok, producer.TryReserve(16, out _));
            Assert.Throws<ArgumentOutOfRangeException>(() => producer.Commit(17, 44));

            Assert.Equal(RingStatus.Ok, attacher.GetQueue(0).Consumer.TryPeek(out var frame));
            Assert.Equal(42UL, frame.Tag);
            Assert.Equal(10, frame.Data.Length);
            Assert.Equal(-1, FirstMismatch(frame.Data, 7));
        }
    }

    [Fact]
    public void TryReserve_ReportsBrokenWhenTheConsumersIndexLies()
    {
        var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
        using (creator) using (attacher)
        {
            var producer = creator.GetQueue(0).Producer;
            Send(producer, 100, 1, 1);
            // The consumer claims to have consumed beyond what was ever produced.
            ulong* head = (ulong*)(creator.BaseForTests + RingLayout.ControlOffset(0, RingLayout.Submission) + RingLayout.OffHead);
            *head = 1 << 20;
            Assert.Equal(RingStatus.Broken, producer.TryReserve(10, out _));
            Assert.True(producer.IsBroken);
            *head = 0;
            Assert.Equal(RingStatus.Broken, producer.TryReserve(10, out _));
        }
    }

    [Fact]
    public void Reserve_WaitsForSpaceAndWakesWhenTheConsumerReleases()
    {
        var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
        using (creator) using (attacher)
        {
            creator.SpinDuration = TimeSpan.Zero;
            var producer = creator.GetQueue(0).Producer;
            var consumer = attacher.GetQueue(0).Consumer;
            while (producer.TryReserve(1000, out _) == RingStatus.Ok) producer.Commit(1000, 0);
            var releaser = Worker.Start(() =>
            {
                Thread.Sleep(100);
                Assert.Equal(RingStatus.Ok, consumer.TryPeek(out _));
                consumer.Release();
            });
            var started = Environment.TickCount64;
            Assert.Equal(RingStatus.Ok, producer.Reserve(1000, out _, TimeSpan.FromSeconds(10)));
            long waited = Environment.TickCount64 - started;
            releaser.Join();
            Assert.InRange(waited, 50, 5000);
        }
    }
}
