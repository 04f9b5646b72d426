using Hypervisor.Interop;
using Hypervisor.Passthrough.Engine;
using Hypervisor.Passthrough.Transport;
using Hypervisor.Protocol.Fuse;
using Hypervisor.Protocol.Ring;
using Microsoft.Extensions.Logging.Abstractions;

namespace Hypervisor.Passthrough.Tests.Transport;

/// <summary>
/// The daemon's side of payloads in guest memory: a table received on the guest-memory channel is mapped and
/// acknowledged; a READ frame's data goes into the guest's memory through the filesystem's vectored read, with the out
/// header alone as reply; a frame naming a range outside the mapped regions, or a table never received, is answered
/// EIO without touching memory, and the queue keeps being served.
/// </summary>
public sealed class RingTransportGuestMemoryTests : IDisposable
{
    private const ulong GuestBase = 0x1000_0000;
    private const int GuestSize = 1 << 20;
    private readonly string _file = Path.Combine(Path.GetTempPath(), $"guest-ram-{Guid.NewGuid():N}");

    public void Dispose() => File.Delete(_file);

    [Fact]
    public void ARangeOutsideTheMappedRegionsIsAnsweredEio_AndTheDaemonKeepsServing()
    {
        using var guest = File.Open(_file, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.ReadWrite);
        guest.SetLength(GuestSize);
        using var rings = ShmRingSet.Create(2);
        var f = rings.Fds;
        var fds = new RingFds(Libc.dup(f.MemFd), [.. f.Doorbells.Select(fd => Libc.dup(fd))]) { GuestMemoryFd = Libc.dup(f.GuestMemoryFd!.Value) };
        using var engine = new FuseEngine(new Filler());
        using var transport = RingTransport.Start(engine, NullLogger.Instance, fds.ToString());
        var channel = rings.GuestMemoryChannel!;

        // The table: one region of the file at guest 0x1000_0000; the daemon acknowledges it.
        var message = new byte[GuestMemoryMessage.MaxSize];
        int n = GuestMemoryMessage.WriteTable(message, 7, [new GuestMemoryRegion(GuestBase, GuestSize, 0)]);
        Assert.Equal(n, (int)Libc.SendWithFds(channel, message.AsSpan(0, n), [(int)guest.SafeFileHandle.DangerousGetHandle()], Libc.MSG_NOSIGNAL));
        Assert.Equal(GuestMemoryMessage.HeaderSize, (int)Libc.ReceiveWithFds(channel, message, new int[1], 0, out _, out _));
        Assert.True(GuestMemoryMessage.TryReadHeader(message.AsSpan(0, GuestMemoryMessage.HeaderSize), out var kind, out uint status, out ulong generation));
        Assert.Equal((GuestMemoryMessageKind.Ack, 0u, 7UL), (kind, status, generation));

        var queue = rings.GetQueue(1);
        RingSubmit.Submit(queue, FuseFrames.Init(), 1, RingRecordFlags.None);
        Assert.Equal(0, Reply(queue, 1).Header.Error);

        // 100 bytes short of the region's end, 4096 long: outside. Then a table that was never sent.
        RingSubmit.Submit(queue, ReadFrame(2, 7, (GuestBase + 4096, 4096), (GuestBase + GuestSize - 100, 4096)), 2, RingRecordFlags.GuestMemory);
        var (header, length) = Reply(queue, 2);
        Assert.Equal((16, 16u, -5, 2UL), (length, header.Len, header.Error, header.Unique));
        RingSubmit.Submit(queue, ReadFrame(3, 99, (GuestBase, 4096)), 3, RingRecordFlags.GuestMemory);
        (header, length) = Reply(queue, 3);
        Assert.Equal((16, -5, 3UL), (length, header.Error, header.Unique));
        Assert.True(Ram(guest).AsSpan().IndexOfAnyExcept((byte)0) < 0, "an invalid frame touched guest memory");

        // The queue is still served: two ranges filled, the reply is the header alone and counts the data.
        RingSubmit.Submit(queue, ReadFrame(4, 7, (GuestBase + 4096, 8192), (GuestBase + 65536, 4096)), 4, RingRecordFlags.GuestMemory);
        (header, length) = Reply(queue, 4);
        Assert.Equal((16, 16u + 12288, 0, 4UL), (length, header.Len, header.Error, header.Unique));
        var ram = Ram(guest);
        Assert.True(ram.AsSpan(4096, 8192).IndexOfAnyExcept((byte)0x42) < 0 && ram.AsSpan(65536, 4096).IndexOfAnyExcept((byte)0x42) < 0);
        Assert.True(ram.AsSpan(0, 4096).IndexOfAnyExcept((byte)0) < 0 && ram.AsSpan(12288, 65536 - 12288).IndexOfAnyExcept((byte)0) < 0
            && ram.AsSpan(69632).IndexOfAnyExcept((byte)0) < 0, "memory outside the ranges was written");
    }

    [Fact]
    public void ReplyPayloadsAreBuiltInGuestMemory_OverOneRangeAndAcrossSeveral_AndASizeQueryGetsItsUsualReply()
    {
        using var guest = File.Open(_file, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.ReadWrite);
        guest.SetLength(GuestSize);
        using var rings = ShmRingSet.Create(2);
        var f = rings.Fds;
        var fds = new RingFds(Libc.dup(f.MemFd), [.. f.Doorbells.Select(fd => Libc.dup(fd))]) { GuestMemoryFd = Libc.dup(f.GuestMemoryFd!.Value) };
        var fs = new Builder();
        using var engine = new FuseEngine(fs);
        using var transport = RingTransport.Start(engine, NullLogger.Instance, fds.ToString());
        var channel = rings.GuestMemoryChannel!;
        var message = new byte[GuestMemoryMessage.MaxSize];
        int n = GuestMemoryMessage.WriteTable(message, 7, [new GuestMemoryRegion(GuestBase, GuestSize, 0)]);
        Assert.Equal(n, (int)Libc.SendWithFds(channel, message.AsSpan(0, n), [(int)guest.SafeFileHandle.DangerousGetHandle()], Libc.MSG_NOSIGNAL));
        Assert.Equal(GuestMemoryMessage.HeaderSize, (int)Libc.ReceiveWithFds(channel, message, new int[1], 0, out _, out _));
        var queue = rings.GetQueue(1);
        RingSubmit.Submit(queue, FuseFrames.Init(), 1, RingRecordFlags.None);
        Assert.Equal(0, Reply(queue, 1).Header.Error);

        // READDIRPLUS into one range: the listing is built where the guest reads it, the reply is the header alone.
        var readdir = FuseFrames.Build(FuseOpcode.ReadDirPlus, 2, 1, FuseFrames.Struct(new ReadIn { Fh = 9, Size = 16384 }));
        RingSubmit.Submit(queue, Record(readdir, (GuestBase + 4096, 16384)), 2, RingRecordFlags.GuestMemory);
        var (header, length) = Reply(queue, 2);
        Assert.Equal((16, 16u + Builder.ListingLength, 0, 2UL), (length, header.Len, header.Error, header.Unique));
        var ram = Ram(guest);
        Assert.True(ram.AsSpan(4096, Builder.ListingLength).SequenceEqual(Builder.Listing));
        Assert.True(ram.AsSpan(4096 + Builder.ListingLength).IndexOfAnyExcept((byte)0) < 0 && ram.AsSpan(0, 4096).IndexOfAnyExcept((byte)0) < 0);

        // READDIR over three ranges, none long enough alone: the same bytes, split in order, nothing written past them.
        Array.Clear(ram);
        RandomAccess.Write(guest.SafeFileHandle, ram, 0);
        var plain = FuseFrames.Build(FuseOpcode.ReadDir, 3, 1, FuseFrames.Struct(new ReadIn { Fh = 9, Size = 16384 }));
        RingSubmit.Submit(queue, Record(plain, (GuestBase + 65536 - 1000, 1000), (GuestBase + 131072, 4000), (GuestBase + 262144, 11384)), 3, RingRecordFlags.GuestMemory);
        (header, length) = Reply(queue, 3);
        Assert.Equal((16, 16u + Builder.ListingLength, 0, 3UL), (length, header.Len, header.Error, header.Unique));
        ram = Ram(guest);
        var got = ram.AsSpan(65536 - 1000, 1000).ToArray().Concat(ram.AsSpan(131072, 4000).ToArray()).Concat(ram.AsSpan(262144, Builder.ListingLength - 5000).ToArray()).ToArray();
        Assert.Equal(Builder.Listing, got);
        // The listing has no zero byte: any other non-zero byte in the guest's memory was written outside the ranges.
        Assert.Equal(Builder.ListingLength, ram.Count(b => b != 0));

        // GETXATTR of size 0: fuse_getxattr_out, as on the copy path. Then the value over two ranges.
        var name = FuseFrames.Name("user.v");
        RingSubmit.Submit(queue, Record(FuseFrames.Build(FuseOpcode.GetXAttr, 4, 1, FuseFrames.Concat(FuseFrames.Struct(new GetXAttrIn { Size = 0 }), name)), (GuestBase + 512 * 1024, 4096)), 4, RingRecordFlags.GuestMemory);
        (header, length) = Reply(queue, 4);
        Assert.Equal((24, 24u, 0), (length, header.Len, header.Error));
        Assert.Equal((uint)Builder.Value.Length, BitConverter.ToUInt32(LastReply));
        RingSubmit.Submit(queue, Record(FuseFrames.Build(FuseOpcode.GetXAttr, 5, 1, FuseFrames.Concat(FuseFrames.Struct(new GetXAttrIn { Size = 4096 }), name)), (GuestBase + 600 * 1024, 1000), (GuestBase + 700 * 1024, 3096)), 5, RingRecordFlags.GuestMemory);
        (header, length) = Reply(queue, 5);
        Assert.Equal((16, 16u + (uint)Builder.Value.Length, 0), (length, header.Len, header.Error));
        ram = Ram(guest);
        Assert.Equal(Builder.Value, ram.AsSpan(600 * 1024, 1000).ToArray().Concat(ram.AsSpan(700 * 1024, Builder.Value.Length - 1000).ToArray()).ToArray());
        // A buffer too small for the value: ERANGE, from the filesystem, as on the copy path.
        RingSubmit.Submit(queue, Record(FuseFrames.Build(FuseOpcode.GetXAttr, 6, 1, FuseFrames.Concat(FuseFrames.Struct(new GetXAttrIn { Size = 100 }), name)), (GuestBase + 800 * 1024, 100)), 6, RingRecordFlags.GuestMemory);
        (header, length) = Reply(queue, 6);
        Assert.Equal((16, -34), (length, header.Error));
    }

    private static byte[] LastReply = [];

    private static byte[] Record(byte[] fuse, params (ulong Address, ulong Length)[] ranges)
    {
        var record = new byte[GuestMemoryFrame.Size(ranges.Length, fuse.Length)];
        GuestMemoryFrame.WritePrefix(record, 7, ranges.Length, GuestMemoryDirection.ToGuest);
        for (int i = 0; i < ranges.Length; i++) GuestMemoryFrame.WriteRange(record, i, ranges[i].Address, ranges[i].Length);
        fuse.CopyTo(record.AsSpan(GuestMemoryFrame.FrameOffset(ranges.Length)));
        return record;
    }

    /// <summary>A file system whose directory listing and attribute value are fixed patterns.</summary>
    private sealed class Builder : IFileSystem
    {
        public const int ListingLength = 9000;
        public static readonly byte[] Listing = [.. Enumerable.Range(0, ListingLength).Select(i => (byte)(i % 251 + 1))];
        public static readonly byte[] Value = [.. Enumerable.Range(0, 3000).Select(i => (byte)(i % 13 + 100))];

        public Result<int> ReadDir(in FuseContext ctx, NodeId node, in ReadIn args, Span<byte> destination, bool plus)
        {
            int n = Math.Min(destination.Length, ListingLength);
            Listing.AsSpan(0, n).CopyTo(destination);
            return n;
        }

        public Result<int> GetXAttr(in FuseContext ctx, NodeId node, ReadOnlySpan<byte> name, Span<byte> destination)
        {
            if (destination.IsEmpty) return Value.Length;
            if (destination.Length < Value.Length) return Errno.ERANGE;
            Value.CopyTo(destination);
            return Value.Length;
        }
    }

    private static byte[] Ram(FileStream guest)
    {
        var bytes = new byte[GuestSize];
        Assert.Equal(GuestSize, RandomAccess.Read(guest.SafeFileHandle, bytes, 0));
        return bytes;
    }

    private static byte[] ReadFrame(ulong unique, ulong generation, params (ulong Address, ulong Length)[] ranges)
    {
        var fuse = FuseFrames.Build(FuseOpcode.Read, unique, 5, FuseFrames.Struct(new ReadIn { Fh = 9, Offset = 0, Size = 1 << 20 }));
        var record = new byte[GuestMemoryFrame.Size(ranges.Length, fuse.Length)];
        GuestMemoryFrame.WritePrefix(record, generation, ranges.Length, GuestMemoryDirection.ToGuest);
        for (int i = 0; i < ranges.Length; i++) GuestMemoryFrame.WriteRange(record, i, ranges[i].Address, ranges[i].Length);
        fuse.CopyTo(record.AsSpan(GuestMemoryFrame.FrameOffset(ranges.Length)));
        return record;
    }

    private static (OutHeader Header, int Length) Reply(RingQueue queue, ulong tag)
    {
        Assert.Equal(RingStatus.Ok, queue.Consumer.Peek(out var frame, TimeSpan.FromSeconds(30), CancellationToken.None));
        Assert.Equal(tag, frame.Tag);
        var result = (FuseFrames.Header(frame.Data), frame.Data.Length);
        LastReply = frame.Data[16..].ToArray();
        queue.Consumer.Release();
        return result;
    }

    /// <summary>A file system whose READ into guest memory fills each buffer with 0x42.</summary>
    private sealed unsafe class Filler : IFileSystem
    {
        public Result<int> ReadTo(in FuseContext ctx, NodeId node, in ReadIn args, ReadOnlySpan<IoBuffer> destination)
        {
            int total = 0;
            foreach (var b in destination)
            {
                new Span<byte>((void*)b.Address, (int)b.Length).Fill(0x42);
                total += (int)b.Length;
            }
            return total;
        }
    }
}
