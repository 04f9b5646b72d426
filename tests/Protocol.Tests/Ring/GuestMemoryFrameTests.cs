using System.Buffers.Binary;
using Hypervisor.Protocol.Ring;
using static Hypervisor.Protocol.Tests.Ring.RingTestSupport;

namespace Hypervisor.Protocol.Tests.Ring;

/// <summary>
/// The formats of payloads in guest memory: a guest-memory frame's prefix and address list, the guest-memory channel's
/// messages, the ring delivering a GuestMemory record, and the channel handed over with the ring set's descriptors.
/// </summary>
public sealed class GuestMemoryFrameTests
{
    [Fact]
    public void AFrameRoundTrips_GenerationDirectionRangesInOrder_ThenTheFuseFrame()
    {
        var fuse = new byte[80];
        BinaryPrimitives.WriteUInt32LittleEndian(fuse, 80);
        fuse[79] = 0xee;
        var record = new byte[GuestMemoryFrame.Size(3, fuse.Length)];
        GuestMemoryFrame.WritePrefix(record, 0x1122334455, 3, GuestMemoryDirection.FromGuest);
        GuestMemoryFrame.WriteRange(record, 0, 0x1000_0000, 4096);
        GuestMemoryFrame.WriteRange(record, 1, 0x2000_0000, 1 << 20);
        GuestMemoryFrame.WriteRange(record, 2, 0xffff_ffff_0000, 1);
        fuse.CopyTo(record.AsSpan(GuestMemoryFrame.FrameOffset(3)));

        // The bytes as README.md lays them out.
        Assert.Equal(0x1122334455UL, BinaryPrimitives.ReadUInt64LittleEndian(record));
        Assert.Equal(3u, BinaryPrimitives.ReadUInt32LittleEndian(record.AsSpan(8)));
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(record.AsSpan(12)));
        Assert.Equal(0x2000_0000UL, BinaryPrimitives.ReadUInt64LittleEndian(record.AsSpan(16 + 16)));
        Assert.Equal(1UL << 20, BinaryPrimitives.ReadUInt64LittleEndian(record.AsSpan(16 + 24)));

        Assert.True(GuestMemoryFrame.TryParse(record, out var generation, out var direction, out var ranges, out var frame));
        Assert.Equal((0x1122334455UL, GuestMemoryDirection.FromGuest), (generation, direction));
        Assert.Equal(3, GuestMemoryFrame.RangeCount(ranges));
        Assert.Equal(new GuestRange(0x1000_0000, 4096), GuestMemoryFrame.ReadRange(ranges, 0));
        Assert.Equal(new GuestRange(0xffff_ffff_0000, 1), GuestMemoryFrame.ReadRange(ranges, 2));
        Assert.Equal(fuse, frame.ToArray());
    }

    [Theory]
    [InlineData(0u, 0u, 64)]      // no range
    [InlineData(1025u, 0u, 20000)] // more than IOV_MAX ranges
    [InlineData(2u, 2u, 64)]       // unknown direction
    [InlineData(4u, 1u, 64)]       // shorter than its ranges
    public void AFrameThatCannotBeTrueIsRefused(uint count, uint direction, int length)
    {
        var record = new byte[length];
        BinaryPrimitives.WriteUInt32LittleEndian(record.AsSpan(8), count);
        BinaryPrimitives.WriteUInt32LittleEndian(record.AsSpan(12), direction);
        Assert.False(GuestMemoryFrame.TryParse(record, out _, out _, out _, out _));
        Assert.False(GuestMemoryFrame.TryParse(record.AsSpan(0, 15), out _, out _, out _, out _));
    }

    [Fact]
    public void ChannelMessages_RoundTrip_AndImpossibleTablesAreRefused()
    {
        var buffer = new byte[GuestMemoryMessage.MaxSize];
        GuestMemoryRegion[] regions = [new(0x1000_0000, 1 << 30, 0), new(0x1_0000_0000, 2 << 20, 4096)];
        int n = GuestMemoryMessage.WriteTable(buffer, 42, regions);
        Assert.Equal(16 + 2 * 32, n);
        Assert.True(GuestMemoryMessage.TryReadHeader(buffer.AsSpan(0, n), out var kind, out uint count, out ulong generation));
        Assert.Equal((GuestMemoryMessageKind.Table, 2u, 42UL), (kind, count, generation));
        Assert.Equal(regions[1], GuestMemoryMessage.ReadRegion(buffer, 1));
        Assert.False(GuestMemoryMessage.TryReadHeader(buffer.AsSpan(0, n - 1), out _, out _, out _));

        // A region of size 0, or one whose end wraps around, cannot be mapped.
        GuestMemoryMessage.WriteTable(buffer, 43, [new GuestMemoryRegion(0x1000, 0, 0)]);
        Assert.False(GuestMemoryMessage.TryReadHeader(buffer.AsSpan(0, 48), out _, out _, out _));
        GuestMemoryMessage.WriteTable(buffer, 43, [new GuestMemoryRegion(ulong.MaxValue - 10, 4096, 0)]);
        Assert.False(GuestMemoryMessage.TryReadHeader(buffer.AsSpan(0, 48), out _, out _, out _));

        n = GuestMemoryMessage.WriteHeader(buffer, GuestMemoryMessageKind.Ack, 12, 43);
        Assert.True(GuestMemoryMessage.TryReadHeader(buffer.AsSpan(0, n), out kind, out uint status, out generation));
        Assert.Equal((GuestMemoryMessageKind.Ack, 12u, 43UL), (kind, status, generation));
        BinaryPrimitives.WriteUInt32LittleEndian(buffer, 9);
        Assert.False(GuestMemoryMessage.TryReadHeader(buffer.AsSpan(0, n), out _, out _, out _));
    }

    [Fact]
    public void TheRingDeliversAGuestMemoryRecordWithItsFlag()
    {
        var (creator, attacher) = Pair(1, maxFrame: 1000, directionBytes: 4096);
        using (creator) using (attacher)
        {
            Assert.Equal(RingStatus.Ok, creator.GetQueue(0).Producer.TryReserve(48, out var span));
            span.Fill(7);
            creator.GetQueue(0).Producer.Commit(48, 5, notify: true, RingRecordFlags.GuestMemory);
            Assert.Equal(RingStatus.Ok, attacher.GetQueue(0).Consumer.TryPeek(out var frame));
            Assert.Equal((RingRecordFlags.GuestMemory, 5UL, 48), (frame.Flags, frame.Tag, frame.Data.Length));
            Assert.Throws<ArgumentOutOfRangeException>(() =>
            {
                creator.GetQueue(0).Producer.TryReserve(8, out _);
                creator.GetQueue(0).Producer.Commit(8, 6, true, RingRecordFlags.Pad);
            });
        }
    }

    [Fact]
    public void TheChannelIsASeqpacketSocketHandedOverWithTheRingDescriptors()
    {
        using var creator = ShmRingSet.Create(1);
        var fds = creator.Fds;
        Assert.NotNull(fds.GuestMemoryFd);
        var text = fds.ToString();
        Assert.EndsWith($",guestmem={fds.GuestMemoryFd}", text);
        Assert.Equal(fds.GuestMemoryFd, RingFds.Parse(text).GuestMemoryFd);
        Assert.Contains((fds.GuestMemoryFd!.Value, "guestmem"), fds.Named());
        Assert.Null(RingFds.Parse("memfd=5,queues=1,sq0=6,sqf0=7,cq0=8,cqf0=9").GuestMemoryFd);
        Assert.NotNull(creator.GuestMemoryChannel);
    }
}
